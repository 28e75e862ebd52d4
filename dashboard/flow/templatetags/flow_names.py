"""Names a person reads for flow nodes and channels, in any template:

{% load flow_names %}
{{ edge.source|node_name }}       shop.orders <span class="system">kafka</span>, the id on hover
{{ channel|channel_name:system }} the same from a channel's name and system
"""

from django import template
from django.utils.html import format_html

from dashboard.flow.queries import channel_label, parse_node
from dashboard.templatetags.eventscope import system_badge

register = template.Library()


def _named(label: str, system: str, title: str):
    if system:
        return format_html('<span title="{}">{}</span> {}', title, label, system_badge(system))
    return format_html('<span title="{}">{}</span>', title, label)


@register.filter
def node_name(node_id):
    if not node_id:
        return ""
    node = parse_node(str(node_id))
    return _named(node["label"], node["system"], node_id)


@register.filter
def channel_name(channel, system=""):
    if not channel:
        return ""
    return _named(channel_label(str(channel)), system or "", str(channel))
