"""The world's trained paper-exact GoogLeNets, read from their own formats into the paper's network.

* ``caffe``  Caffe's binary ``NetParameter`` (``.caffemodel``), parsed with the ``protobuf`` package from a schema
             subset declared in code (no Caffe needed).
* ``bvlc``   BVLC's ``bvlc_googlenet.caffemodel``: its layer names mapped onto ``googlenet``, aux heads included;
             its preprocessing (BGR, 0..255, mean 104/117/123) recorded in the weights file.
"""
