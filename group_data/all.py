"""Settings for every host. Each key is documented where its default lives (the
component's DEFAULTS); an unknown key stops the deploy. See README: Settings."""

# Every deploy after bootstrap connects as this user and escalates with sudo.
ssh_user = "deploy"
_sudo = True

# Who may reach what, by role. Sources are groups (their hosts' private_ip), CIDRs,
# or "any". SSH (22/tcp) is always open to hardening_ssh_sources.
hardening_firewall_matrix = {
    "lb": {"80/tcp": ["any"], "443/tcp": ["any"]},
    "web": {"80/tcp": ["lb"]},
    "db": {"5432/tcp": ["web", "job"], "6379/tcp": ["web", "job"]},
    # Central logging: every host sends its logs to the log host.
    "logs": {"514/tcp": ["lb", "web", "job", "db", "logs"]},
}
