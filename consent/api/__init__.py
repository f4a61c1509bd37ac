"""The consent REST API: patients, consent forms and consent records."""
