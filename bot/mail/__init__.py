"""Mail components: outbound client, inbound server, classifier, gateway."""
