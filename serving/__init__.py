"""The Ray Serve application: HTTP ingress, codecs, routing to shards, the CLI."""
