"""See and use openPangu block-diffusion language models: engine, loader, training and web demo."""
