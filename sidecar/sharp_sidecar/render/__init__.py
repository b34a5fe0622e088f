"""Gaussians -> pictures: render scenes, rasterisers (gsplat or plain torch), colour maps, video and the render op."""
