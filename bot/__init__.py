"""Identity Bot: the service core (configuration, services, mail) and the runtime that wires it to Slack."""
