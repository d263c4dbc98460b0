"""Start the demo: `python app.py [--model PATH_OR_HUB_ID] [--allow-custom-models] [--threads N] [--dtype D]
[--host H] [--port P] [--share]`.

Also the Hugging Face Spaces entry point (app_file). PANGU_DEMO_MODEL, PANGU_DEMO_ALLOW_CUSTOM=1,
PANGU_DEMO_THREADS and PANGU_DEMO_DTYPE do what the flags do.
"""

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo works offline: no calls home

import torch

from pangu_demo.loading import DTYPES
from pangu_demo.models import allow_custom_default
from pangu_demo.ui import build_app, default_model_source, default_threads, launch_options


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _dtype_name(text: str) -> str:
    if text not in (*DTYPES, "auto"):
        raise argparse.ArgumentTypeError(f"must be one of {', '.join([*DTYPES, 'auto'])}, got {text!r}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description="Block diffusion, live: the openPangu diffusion demo.")
    parser.add_argument("--model", default=default_model_source(),
                        help="checkpoint folder or hub id (default: $PANGU_DEMO_MODEL or the embedded model)")
    parser.add_argument("--allow-custom-models", action="store_true", default=allow_custom_default(),
                        help="let visitors load another local folder or hub id")
    # String defaults (the environment) go through `type` too, so a bad env value is refused like a bad flag.
    parser.add_argument("--threads", type=_at_least_one,
                        default=os.environ.get("PANGU_DEMO_THREADS") or str(default_threads()),
                        help="torch CPU threads (default: all cores but one, which is left to the web page)")
    parser.add_argument("--dtype", type=_dtype_name, default=os.environ.get("PANGU_DEMO_DTYPE", "auto"),
                        help="weights dtype (auto: bfloat16 on accelerators and on CPUs with AVX512-BF16, "
                             "float32 on other CPUs)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", "7860"))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = build_app(args.model, allow_custom=args.allow_custom_models, dtype=args.dtype)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())


if __name__ == "__main__":
    main()
