"""One gRPC call to the `feedback_text` ensemble, printing each comment's label.

python -m client.example "the invoice charged me twice" "support never answered" [--url localhost:8001]
"""

import argparse

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--url", default="localhost:8001")
    args = parser.parse_args()

    text = np.array([[t.encode()] for t in args.texts], dtype=object)
    tensor = grpcclient.InferInput("TEXT", list(text.shape), "BYTES")
    tensor.set_data_from_numpy(text)
    result = grpcclient.InferenceServerClient(args.url).infer("feedback_text", [tensor])
    for comment, label, probs in zip(args.texts, result.as_numpy("LABEL")[:, 0], result.as_numpy("PROBS"), strict=True):
        print(f"{label.decode():<12} {probs.max():.2f}  {comment}")


if __name__ == "__main__":
    main()
