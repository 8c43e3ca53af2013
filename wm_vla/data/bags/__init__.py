"""ROS 2 bags with rosbags (no system ROS): read (mcap / sqlite3, Image + CompressedImage, as-of alignment,
episodes), turn into decision points for offline evaluation, and record (split by size / duration)."""

from wm_vla.data.bags.align import asof_indices
from wm_vla.data.bags.decisions import BagData, DecisionPoint, LoadConfig, load_decisions
from wm_vla.data.bags.episodes import Episode, by_gaps, by_markers, by_ranges, parse_ranges
from wm_vla.data.bags.images import image_to_rgb
from wm_vla.data.bags.reader import BagIssues, BagReader, Record
from wm_vla.data.bags.topics import CommandSource, TopicMap, parse_overrides
from wm_vla.data.bags.typestore import bag_typestore
from wm_vla.data.bags.writer import BagRecorder, RecorderConfig

__all__ = ["BagData", "BagIssues", "BagReader", "BagRecorder", "CommandSource", "DecisionPoint", "Episode",
           "LoadConfig", "Record", "RecorderConfig", "TopicMap", "asof_indices", "bag_typestore", "by_gaps",
           "by_markers", "by_ranges", "image_to_rgb", "load_decisions", "parse_overrides", "parse_ranges"]
