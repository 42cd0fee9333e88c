"""TensorFlow error messages without the graph dump around what went wrong.

A `tf.errors.OpError` raised in a graph (a `tf.function`, a SavedModel's signature, a
`tf.data` pipeline) carries "Graph execution error:", "Detected at node ... defined at" and
the Python frames that built the node, and ends its lines with `[[{{node ...}}]]` and
`[Op:...]` markers; an eager op's message starts with `{{function_node ...}}`.
`without_graph_dump` keeps the rest: the op's own words.

Example:

    except tf.errors.InvalidArgumentError as error:
        print(without_graph_dump(error.message))   # Invalid PNG data, size 9
"""

import re

# Node and op markers: [[{{node n}}]]; [Op:Name], with an eager op's " name: "; and an eager
# op's {{function_node f}} prefix.
_MARKERS = re.compile(
    r"\s*\[\[\{\{node [^}]*\}\}\]\]"
    r"|\s*\[Op:[^\]]*\]( name: \S*)?"
    r"|\{\{function_node [^}]*\}\}\s*"
)


def without_graph_dump(message: str) -> str:
    """TensorFlow's `message` without its "Detected at node ... defined at" frames and node
    ids."""
    kept = [
        line
        for line in message.splitlines()
        if line.strip()
        and not line.startswith(("Graph execution error:", "Detected at node "))
        and not re.match(r'\s+File "', line)
    ]
    return _MARKERS.sub("", "\n".join(kept))
