"""Files shipped with the package (configuration and migrations), read one way."""
