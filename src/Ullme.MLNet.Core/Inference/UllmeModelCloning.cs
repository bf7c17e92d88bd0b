using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

public sealed partial class UllmeModel
{
    /// <summary>
    /// A deep copy of this model: a new backbone holding copies of every weight and buffer (same dtype, same device),
    /// sharing the (immutable) config and tokenizer. Training the copy leaves this model untouched, which is how
    /// <c>GrlTrainer</c> and sweeps start every fit from the same base weights.
    /// </summary>
    /// <param name="defaults">Embedding defaults of the copy (e.g. the pooling and attention it was trained with);
    /// null keeps this model's.</param>
    /// <exception cref="UllmeException">The model carries LoRA adapters (merge or unload them first).</exception>
    public UllmeModel Clone(EmbeddingDefaults? defaults = null)
    {
        var backbone = BackboneFactory.CreateForLoading(Config, ScalarType, Device);
        try
        {
            using var scope = NewDisposeScope();
            var tensors = new Dictionary<string, Tensor>();
            foreach (var (name, tensor) in Backbone.state_dict())
                tensors[name] = tensor.detach();
            CheckpointLoader.LoadStateDict(backbone, tensors, $"in-memory model '{ModelId}'", ScalarType, Device, WeightChecks.None);
            backbone.eval();
        }
        catch (UllmeException e) when (Backbone.named_parameters().Any(p => p.name.Contains(".lora_", StringComparison.Ordinal)))
        {
            backbone.Dispose();
            throw new UllmeException($"Model '{ModelId}' carries LoRA adapters; merge or unload them before cloning it.", e);
        }
        catch
        {
            backbone.Dispose();
            throw;
        }
        return new UllmeModel(Config, Tokenizer, backbone, defaults ?? Defaults, LoadOptions, ModelId, SourceFolder, Device, ScalarType);
    }
}
