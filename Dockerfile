# The simulated terminal (port 8888) and its web console and JSON API (port 5000).
#   docker build -t caisse-ap-ip .
#   docker run --rm -p 8888:8888 -p 127.0.0.1:5000:5000 caisse-ap-ip
# The console needs a token here (it listens beyond the container's loopback):
# give one with -e CAISSE_AP_WEB_TOKEN=..., or open the URL with the token the
# server prints at start (docker logs). A journal that survives the container:
#   docker run ... -v caisse-ap-ip-journal:/data caisse-ap-ip \
#       caisse-ap-ip-server --web-host 0.0.0.0 --journal /data/journal.sqlite
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

COPY . /src
RUN pip install --no-cache-dir /src \
    # /data, owned by nobody: a named volume mounted there starts with this owner,
    # so that the unprivileged server can write its journal into it.
    && mkdir /data && chown nobody:nogroup /data

USER nobody
EXPOSE 8888 5000
VOLUME /data

# The terminal's port, which every run has (with or without --no-web): the check
# connects and waits for the terminal to close in turn, which proves the server's
# event loop runs (the web API shares it). Exit status 1 marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["caisse-ap-ip-server", "--check-health", "127.0.0.1:8888"]

# The console must be reachable through the published port, hence 0.0.0.0 inside
# the container; it then requires a token: $CAISSE_AP_WEB_TOKEN when set, else one
# the server makes and prints in the console's URL. Requests must name the console
# by an IP address or localhost; add a DNS name with --web-allowed-host NAME.
CMD ["caisse-ap-ip-server", "--web-host", "0.0.0.0"]
