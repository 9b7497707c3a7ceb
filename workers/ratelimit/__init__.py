"""Rate limits: the pipes (``pipes``), the other workers' counts of a shared pipe (``peers``) and
their exchange over the mesh (``share``); ``docs/protection.md``."""
