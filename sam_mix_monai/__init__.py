"""SAM-Mix on MONAI: few-label liver segmentation in abdominal CT.

The package tree follows the data flow, and no module imports back up the chain::

    utils -> transforms -> data -> networks -> engines -> inference / bundle -> cli
"""

__version__ = "0.1.0"
