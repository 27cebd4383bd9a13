# Load and validate the params with deltalab's own loader, so a bad file stops snakemake before any
# job starts, with the same one-line message as `deltalab validate`.
import os
import sys

from deltalab import pipeline
from deltalab.config import load_params
from deltalab.errors import UserError

# The params file is params.yaml, or the file given with `--configfile` (e.g. configs/smol.yaml):
# deltalab's loader validates it and every job gets it as `--params`.
PARAMS_FILE = os.path.relpath(workflow.configfiles[-1]) if workflow.configfiles else "params.yaml"
ENV = "../envs/deltalab.yaml"  # relative to the rule files

try:
    P = load_params(PARAMS_FILE)
except UserError as err:
    sys.exit(f"error: {err}")
