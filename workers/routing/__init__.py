"""Where a request goes: the routing table (``table``), destination sets with health and probes
(``dispatcher``), and the sources trusted to name their own next hop (``trusted``)."""
