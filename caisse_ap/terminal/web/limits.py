"""The console's HTTP limits: their defaults, for the command line (web/__init__.py) and
the Site (site.py), in a module of their own that imports nothing.

Connections open at once: each open console takes one or two, and one per
event stream; more wait. Seconds a request (line, headers, body) has to
arrive whole, however slowly it comes; answers and event streams have no
time limit.
"""

MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 10.0
