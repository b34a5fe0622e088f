"""Running the network: precision policies, the fast path, the pipeline (photo -> metric Gaussians), and the
photo file -> PLY file steps (``predict``, ``batch``) that `sharp predict` and `sharp serve` share."""
