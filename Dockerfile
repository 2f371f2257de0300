# The simulated terminal (port 8888) and its web console and JSON API (port 5000).
#   docker build -t caisse-ap-ip .
#   docker run --rm -p 8888:8888 -p 127.0.0.1:5000:5000 -e CAISSE_AP_WEB_TOKEN=s3cret caisse-ap-ip
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

COPY . /src
RUN pip install --no-cache-dir /src

# No files to own (the journal is in memory): the system's unprivileged user.
USER nobody
EXPOSE 8888 5000

# The image has no curl: ask the API with Python. An error status or no answer
# raises, and the exit status 1 marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/api/status', timeout=4)"]

# The console must be reachable through the published port, hence 0.0.0.0 inside
# the container. --web-token defaults to $CAISSE_AP_WEB_TOKEN when it is set.
CMD ["caisse-ap-ip-server", "--web-host", "0.0.0.0"]
