"""The ``bayestwin demo`` workflow, run through the service layer."""
