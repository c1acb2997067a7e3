"""The product's domain services: one package per feature, plus who may do what (policy), the audit trail, errors,
the notifier port, secrets and the registry. No Slack, no aiosmtpd, no Settings object here."""
