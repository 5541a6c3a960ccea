# fal-mcp as a remote MCP server over streamable HTTP.
#   docker build -t fal-mcp .
#   docker run -p 8080:8080 -e FAL_KEY=... -e FAL_MCP_AUTH_TOKEN=$(openssl rand -hex 32) fal-mcp
FROM python:3.12-slim

WORKDIR /app
COPY core ./core
COPY plugins ./plugins
# The core and every pack; not the offline sandbox (fal-mcp-sandbox): a deployed server talks to fal.
RUN pip install --no-cache-dir ./core ./plugins/image ./plugins/video ./plugins/audio ./plugins/utility \
    && useradd --create-home --uid 10001 fal

USER fal
ENV FAL_MCP_TRANSPORT=http \
    FAL_MCP_HOST=0.0.0.0 \
    FAL_MCP_PORT=8080
EXPOSE 8080
# Listening on 0.0.0.0 needs FAL_MCP_AUTH_TOKEN: without it the server refuses to start and says why.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"
CMD ["fal-mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8080"]
