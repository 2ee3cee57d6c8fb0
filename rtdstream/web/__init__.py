"""The web view (``rtdstream web``): aiohttp + Socket.IO live data, history API, dashboard.

``server`` wires it together; ``feed`` reads the output topics, ``live`` turns
them into events, ``sources`` remembers each source's recent past,
``backpressure`` keeps slow clients from costing memory, ``sockets`` handles
what clients send, ``api`` serves HTTP, ``dashboard`` the page at ``/``, and
``loadtest`` measures all of it under load.
"""
