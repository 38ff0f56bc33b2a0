from django import template

register = template.Library()


@register.filter
def percent(value) -> str:
    """0.8624 -> "86.2%"; nothing to show -> an en dash."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    return f"{100 * value:.1f}%"
