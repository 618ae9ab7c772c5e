"""One module per proto service file (proto/stophub/v1/<name>.proto): its handlers and its
command table. A handler takes the pipeline's Context and the decoded body and returns the
answer's body; hub/service/pipeline.py does everything around it."""
