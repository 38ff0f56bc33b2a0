from django import template

register = template.Library()


@register.filter
def percent(value) -> str:
    """0.8624 -> "86.2%"; nothing to show -> an en dash."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    return f"{100 * value:.1f}%"


@register.filter
def p_value(value) -> str:
    """0.04123 -> "0.041"; 3.2e-07 -> "3.2e-07": two significant digits."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "\u2013"
    return f"{value:.2g}"
