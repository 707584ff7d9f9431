"""The auth proxy: what a browser talks to, so it never holds the API key."""
