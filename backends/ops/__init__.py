"""One module per operator family; each registers its operators with ``@register``."""
