"""Local real models that stand in for the built-in profiles' published anchors ([[device.anchors]]):
anchor model name -> (tests/real_models.py key, input shapes, what differs)."""

from __future__ import annotations

ANCHOR_PROXIES: dict[str, tuple[str, dict[str, tuple[int, ...]], str]] = {
    "YOLO11n 640": ("nudenet_yolov8n", {"images": (1, 3, 640, 640)},
                    "proxy: YOLOv8n at 640 px (8.7 GFLOPs; YOLO11n is 6.5 GFLOPs by Ultralytics' count)"),
    "YOLOv8-n 640": ("nudenet_yolov8n", {"images": (1, 3, 640, 640)}, "YOLOv8n at 640 px (NudeNet's 18-class head)"),
}
