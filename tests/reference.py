"""Float64 (or any-dtype) PyTorch references for the fastwhisper ops and the whole encoder.

Written from whisper/model.py's definitions with plain torch functions, so they run in float64
(openai-whisper's own LayerNorm always computes in float32). test_encoder checks that
`encoder_reference` agrees with whisper.model.AudioEncoder before it is used as a yardstick.
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-5


def conv_stem(mel, w1, b1, w2, b2, pos):
    x = F.gelu(F.conv1d(mel, w1, b1, padding=1))
    x = F.gelu(F.conv1d(x, w2, b2, stride=2, padding=1))
    return x.permute(0, 2, 1) + pos


def layer_norm(x, w, b, eps=EPS):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def linear(x, w, b=None, residual=None, gelu=False):
    y = F.linear(x, w, b)
    if gelu:
        y = F.gelu(y)
    if residual is not None:
        y = y + residual
    return y


def attention(q, k, v, n_head):
    b, tq, d = q.shape
    dh = d // n_head
    qh = q.reshape(b, tq, n_head, dh).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], n_head, dh).transpose(1, 2)
    vh = v.reshape(b, v.shape[1], n_head, dh).transpose(1, 2)
    w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    return (w @ vh).transpose(1, 2).reshape(b, tq, d)


def encoder_reference(encoder, mel, dtype=torch.float64):
    """Run whisper.model.AudioEncoder `encoder`'s weights through the reference ops in `dtype`."""
    p = {k: v.to(dtype) for k, v in encoder.state_dict().items()}
    n_head = encoder.blocks[0].attn.n_head
    x = conv_stem(mel.to(dtype), p["conv1.weight"], p["conv1.bias"], p["conv2.weight"], p["conv2.bias"],
                  p["positional_embedding"])
    for i in range(len(encoder.blocks)):
        g = lambda name: p[f"blocks.{i}.{name}"]  # noqa: E731
        h = layer_norm(x, g("attn_ln.weight"), g("attn_ln.bias"))
        a = attention(linear(h, g("attn.query.weight"), g("attn.query.bias")),
                      linear(h, g("attn.key.weight")),
                      linear(h, g("attn.value.weight"), g("attn.value.bias")), n_head)
        x = linear(a, g("attn.out.weight"), g("attn.out.bias"), residual=x)
        h = layer_norm(x, g("mlp_ln.weight"), g("mlp_ln.bias"))
        h = linear(h, g("mlp.0.weight"), g("mlp.0.bias"), gelu=True)
        x = linear(h, g("mlp.2.weight"), g("mlp.2.bias"), residual=x)
    return layer_norm(x, p["ln_post.weight"], p["ln_post.bias"])
