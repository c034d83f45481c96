"""The local sandbox: VM-like Debian 13 or 12 hosts as Docker containers (a test and demo
fixture)."""
