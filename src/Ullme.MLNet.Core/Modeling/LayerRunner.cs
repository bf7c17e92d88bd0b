using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Runs one layer of a backbone: <paramref name="layer"/> maps the layer's input state to its output, with the
/// batch's shared inputs (masks, rotary tables) already bound. The plain runner is <c>(layer, x) =&gt; layer(x)</c>;
/// a trainer passes one that checkpoints activations per layer (see
/// <see cref="EmbeddingBackbone.ForwardLayers"/>).
/// </summary>
internal delegate Tensor LayerRunner(Func<Tensor, Tensor> layer, Tensor input);
