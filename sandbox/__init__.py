"""The local sandbox: VM-like Debian 12 hosts as Docker containers (a test and demo fixture)."""
