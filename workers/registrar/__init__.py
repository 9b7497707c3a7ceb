"""The registrar (RFC 3261 §10.3): REGISTER handling (``register``) and the bindings kept in a
cacheDB (``location``)."""
