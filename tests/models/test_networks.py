import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vi_jax.models import (
    ACTIVATIONS,
    MLP,
    ConvDecoderNet,
    ConvEncoderNet,
    flatten_leading,
    get_activation,
    unflatten_leading,
)
from vi_jax.models.functional import merge_params, split_params


@pytest.mark.parametrize("lead", [(), (5,), (3, 5)])
def test_mlp_shapes_any_leading_dims(lead):
    net = MLP(64, [16, 16], 4, rngs=nnx.Rngs(0))
    x = jnp.ones((*lead, 64))
    assert net(x).shape == (*lead, 4)
    assert len(net.layers) == 3


def test_mlp_no_hidden_is_linear():
    net = MLP(16, [], 4, rngs=0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)
    w, b = net.layers[0].kernel[...], net.layers[0].bias[...]
    np.testing.assert_allclose(net(x), x @ w + b, rtol=1e-5, atol=1e-6)


def test_mlp_leading_dims_are_independent():
    net = MLP(2, [16], 64, activation="tanh", rngs=0)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 2)), jnp.float32)
    out = net(x)
    np.testing.assert_allclose(out[1, 2], net(x[1, 2]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_by_name(name):
    net = MLP(2, [16], 4, activation=name, rngs=0)
    x = jnp.linspace(-2.0, 2.0, 10).reshape(5, 2)
    h = get_activation(name)(x @ net.layers[0].kernel[...] + net.layers[0].bias[...])
    expected = h @ net.layers[1].kernel[...] + net.layers[1].bias[...]
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="`activation`"):
        MLP(2, [3], 1, activation="sigmoidish", rngs=0)
    with pytest.raises(ValueError, match="`in_features`"):
        MLP(0, [3], 1, rngs=0)
    with pytest.raises(ValueError, match="`out_features`"):
        MLP(2, [3], -1, rngs=0)
    with pytest.raises(ValueError, match=r"`hidden\[1\]`"):
        MLP(2, [3, 0], 1, rngs=0)
    with pytest.raises(TypeError, match="`out_features`"):
        MLP(2, [3], 1.5, rngs=0)
    with pytest.raises(TypeError, match="`rngs`"):
        MLP(2, [3], 1, rngs="seed")
    net = MLP(2, [16], 4, rngs=0)
    with pytest.raises(ValueError, match="`x`"):
        net(jnp.ones((4, 3)))


def test_conv_encoder_decoder_shapes():
    # Widths shared with the MLP tests (compilation is per parameter shape).
    enc = ConvEncoderNet(4, image_shape=(8, 8, 1), channels=(4,), hidden=16, rngs=0)
    dec = ConvDecoderNet(2, image_shape=(8, 8, 1), channels=(4,), hidden=16, rngs=1)
    # Shapes by abstract evaluation (no compile per shape); values checked once, jitted.
    for lead in [(), (5,), (2, 5)]:
        assert jax.eval_shape(enc, jnp.ones((*lead, 64))).shape == (*lead, 4)
        assert jax.eval_shape(dec, jnp.ones((*lead, 2))).shape == (*lead, 64)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 2)), jnp.float32)
    out = jax.jit(lambda z: dec(z))(z)
    np.testing.assert_allclose(out[1, 3], dec(z[1, 3]), rtol=1e-4, atol=1e-5)
    x = jax.nn.sigmoid(out)
    h = jax.jit(lambda x: enc(x))(x)
    np.testing.assert_allclose(h[0, 2], enc(x[0, 2]), rtol=1e-4, atol=1e-5)


def test_conv_default_mnist_shapes():
    # 28x28x1 with two layers, channels (32, 64): built abstractly (no initialisation).
    enc = nnx.eval_shape(lambda: ConvEncoderNet(4, rngs=0))
    dec = nnx.eval_shape(lambda: ConvDecoderNet(2, rngs=0))
    assert enc.out.kernel.shape == (7 * 7 * 64, 4)
    assert dec.project.kernel.shape == (2, 7 * 7 * 64)
    gd, state = nnx.split(enc)
    out = jax.eval_shape(lambda s, x: nnx.merge(gd, s)(x), state, jnp.zeros((3, 2, 784)))
    assert out.shape == (3, 2, 4)
    gd, state = nnx.split(dec)
    out = jax.eval_shape(lambda s, z: nnx.merge(gd, s)(z), state, jnp.zeros((3, 2, 2)))
    assert out.shape == (3, 2, 784)


def test_conv_refusals():
    with pytest.raises(ValueError, match="divisible"):
        ConvDecoderNet(2, image_shape=(10, 10, 1), channels=(8, 4), rngs=0)
    with pytest.raises(ValueError, match="`channels`"):
        ConvEncoderNet(2, image_shape=(8, 8, 1), channels=(), rngs=0)
    with pytest.raises(ValueError, match="`image_shape`"):
        ConvEncoderNet(2, image_shape=(8, 8), rngs=0)
    with pytest.raises(ValueError, match="`activation`"):
        ConvDecoderNet(2, image_shape=(8, 8, 1), channels=(4,), activation="nope", rngs=0)


def test_jit_vmap_grad_through_split_merge():
    net = MLP(2, [16], 4, rngs=0)
    graphdef, params, rest = split_params(net)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(7, 2)), jnp.float32)

    def f(params, x):
        return jnp.sum(merge_params(graphdef, params, rest)(x) ** 2)

    value = jax.jit(f)(params, x)
    np.testing.assert_allclose(value, f(params, x), rtol=1e-5)
    per_row = jax.vmap(f, in_axes=(None, 0))(params, x)
    np.testing.assert_allclose(jnp.sum(per_row), value, rtol=1e-5)
    grads = jax.grad(f)(params, x)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(
        bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads)
    )


def _mlp_unflattened(net, x):
    # The pre-flattening form: every dense layer applied to the rank-3 activation.
    act = get_activation(net.activation)
    for layer in net.layers[:-1]:
        x = act(x @ layer.kernel[...] + layer.bias[...])
    last = net.layers[-1]
    return x @ last.kernel[...] + last.bias[...]


def test_flatten_leading_round_trip():
    x = jnp.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    flat, lead = flatten_leading(x)
    assert flat.shape == (6, 4) and lead == (2, 3)
    np.testing.assert_array_equal(unflatten_leading(flat, lead), x)
    flat, lead = flatten_leading(jnp.ones(4))
    assert flat.shape == (1, 4) and lead == ()
    assert unflatten_leading(flat, lead).shape == (4,)
    # jit, vmap and grad: a reshape, so the gradient of a sum is all ones.
    np.testing.assert_array_equal(jax.jit(lambda x: flatten_leading(x)[0])(x), x.reshape(6, 4))
    assert jax.vmap(lambda x: flatten_leading(x)[0])(x).shape == (2, 3, 4)
    g = jax.grad(lambda x: jnp.sum(unflatten_leading(*flatten_leading(x))))(x)
    np.testing.assert_array_equal(g, jnp.ones_like(x))


def test_mlp_flattened_matches_unflattened_values_and_gradients():
    # Decoder-like widths; z [K, B, L] as the estimators hand it over.
    net = MLP(3, [16], 64, activation="tanh", rngs=4)
    graphdef, params, rest = split_params(net)
    z = jnp.asarray(np.random.default_rng(5).normal(size=(4, 5, 3)), jnp.float32)
    c = jnp.asarray(np.random.default_rng(6).normal(size=(4, 5, 64)), jnp.float32)

    def loss(params, z, form):
        model = merge_params(graphdef, params, rest)
        out = model(z) if form == "flat" else _mlp_unflattened(model, z)
        return jnp.sum(jnp.sin(out) * c)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (v_flat, (gp_flat, gz_flat)), (v_ref, (gp_ref, gz_ref)) = (
        grad(params, z, "flat"),
        grad(params, z, "ref"),
    )
    np.testing.assert_allclose(v_flat, v_ref, rtol=1e-5)
    np.testing.assert_allclose(gz_flat, gz_ref, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(gp_flat), jax.tree.leaves(gp_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_conv_flattened_matches_per_example():
    # Values and input gradients of the folded [K * B] form against one example at a time.
    dec = ConvDecoderNet(2, image_shape=(8, 8, 1), channels=(4,), hidden=16, rngs=1)
    z = jnp.asarray(np.random.default_rng(7).normal(size=(2, 3, 2)), jnp.float32)

    def f(z):
        return jnp.sum(jnp.sin(dec(z)))

    per_example = jax.vmap(jax.vmap(jax.value_and_grad(f)))
    v, g = jax.jit(jax.value_and_grad(f))(z)
    v_ref, g_ref = per_example(z)
    np.testing.assert_allclose(v, jnp.sum(v_ref), rtol=1e-4)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


def test_dense_layers_see_rank_2_activations():
    # The speed fix itself: no dot_general on a rank-3 activation (slow on XLA CPU).
    net = MLP(3, [16], 64, rngs=4)
    jaxpr = jax.make_jaxpr(lambda z: net(z))(jnp.ones((4, 5, 3)))
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 2 and all(e.invars[0].aval.ndim == 2 for e in dots)
