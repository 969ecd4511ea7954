"""Run the cuda backend's MoE kernels in Triton's interpreter on CPU (CI has no GPU).

TRITON_INTERPRET must be set before triton is first imported, which is why it is set here, at collection.
On a machine with a GPU, set DSQ_MOE_TEST_DEVICE=cuda to run the same tests on the device instead.
"""

import os

if os.environ.get("DSQ_MOE_TEST_DEVICE", "cpu") == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
