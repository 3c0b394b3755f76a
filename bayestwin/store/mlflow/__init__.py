"""MLflow for the twins: where the store is, the registry, the pyfunc.

* :mod:`~bayestwin.store.mlflow.tracking`: the tracking URI, the artifact location and
  the clients;
* :mod:`~bayestwin.store.mlflow.registry`: fits as runs and registered versions,
  aliases, loading, fidelity metrics, the ``digital_twin_models`` row;
* :mod:`~bayestwin.store.mlflow.fit_record` and
  :mod:`~bayestwin.store.mlflow.fidelity_metrics`: what a fit and a fidelity check
  record;
* :mod:`~bayestwin.store.mlflow.pyfunc`: the pyfunc face of a fitted model.
"""
