"""The cacheDB fixtures (real Redis, memcached and the state plane's store) for the location
tests, which run the registrar against each backend."""

from tests.cachedb.conftest import _shared, own_server, server  # noqa: F401 - fixtures
