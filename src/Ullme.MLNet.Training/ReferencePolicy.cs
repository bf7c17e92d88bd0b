using Ullme.MLNet.Modeling;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Lora;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// π_ref of the preference loss: log π_ref(c|q) (summed candidate token log-probs, no gradient) for the rows of a
/// generation batch.
/// <list type="bullet">
/// <item>LoRA: the model with its adapters switched off, computed alongside the policy.</item>
/// <item>Full fine-tuning: the base weights are gone after the first step, so the log-probs of every candidate of
/// every training example are computed once before it (<see cref="ComputeCache"/>) and travel in checkpoints
/// under <see cref="CheckpointTensorName"/>.</item>
/// <item>Before training (loss evaluation): the policy itself.</item>
/// </list>
/// </summary>
internal sealed class ReferencePolicy
{
    /// <summary>The name of the cache in a checkpoint's weights file.</summary>
    public const string CheckpointTensorName = "__reference_logprobs";

    private readonly EmbeddingBackbone _backbone;
    private readonly PolicyForward _policy;
    private readonly TrainingBatchEncoder _encoder;
    private readonly int _cacheBatchSize;

    // Full fine-tuning: log π_ref(c|q) of every candidate of every training example (offsets per example).
    private float[]? _sums;
    private int[]? _offsets;

    public ReferencePolicy(EmbeddingBackbone backbone, PolicyForward policy, TrainingBatchEncoder encoder, int cacheBatchSize)
    {
        _backbone = backbone;
        _policy = policy;
        _encoder = encoder;
        _cacheBatchSize = Math.Max(1, cacheBatchSize);
    }

    /// <summary>Set once training has started: from then on the policy no longer stands for the reference.</summary>
    public bool TrainingStarted { get; set; }

    /// <summary>Whether the full-fine-tuning cache exists.</summary>
    public bool HasCache => _sums is not null;

    /// <summary>log π_ref of every row of <paramref name="gen"/> ([M], no gradient).</summary>
    /// <param name="gen">The rows (a chunk of the batch).</param>
    /// <param name="policySums">The policy's log-probs of the same rows (the reference before training).</param>
    /// <param name="exampleOfQuery">The training-example index of each query of the whole batch, or null outside
    /// training.</param>
    public Tensor Sums(GenerationBatch gen, Tensor policySums, int[]? exampleOfQuery)
    {
        if (LoraInjector.FindLayers(_backbone) is { Count: > 0 })
        {
            using var noGrad = no_grad();
            using var off = LoraInjector.Disabled(_backbone);
            return TokenLogProbs.Sum(_policy.TokenLogProbs(gen), gen.ScoreMask);
        }
        if (_sums is not null && exampleOfQuery is not null)
        {
            var values = new float[gen.Rows];
            for (int i = 0; i < gen.QueryCount; i++)
            {
                int example = exampleOfQuery[gen.FirstQuery + i];
                var rows = gen.RowsOfQuery[i];
                for (int c = 0; c < rows.Count; c++) values[rows[c]] = _sums[_offsets![example] + c];
            }
            return tensor(values);
        }
        if (!TrainingStarted)
            return policySums.detach();                  // untrained: the policy is the reference
        throw new UllmeException("After training, the reference model's log-probabilities exist only for the training examples (full fine-tuning) or not at all (merged adapters); compute preference losses with ReferenceFree, or before merging the adapters.");
    }

    /// <summary>log π_ref for every candidate of every example, with the current (base) weights, in eval mode.</summary>
    public void ComputeCache(IReadOnlyList<TrainingExample> data)
    {
        var offsets = Offsets(data, out int total);
        var sums = new float[total];
        bool wasTraining = _backbone.training;
        _backbone.eval();
        try
        {
            // Examples of similar length together (query + longest candidate, in characters), so that a batch's rows
            // pad to little more than their own length; each example's values are its own whatever its batch.
            var order = Enumerable.Range(0, data.Count)
                .OrderBy(i => data[i].Query.Length + data[i].Negatives.Append(data[i].Positive).Max(c => c.Length)).ThenBy(i => i).ToArray();
            for (int start = 0; start < order.Length; start += _cacheBatchSize)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var indices = order[start..Math.Min(order.Length, start + _cacheBatchSize)];
                var slice = indices.Select(i => data[i]).ToArray();
                var gen = _encoder.Generation(slice);
                var s = TokenLogProbs.Sum(_policy.TokenLogProbs(gen), gen.ScoreMask).to(ScalarType.Float32).cpu().data<float>().ToArray();
                for (int i = 0; i < slice.Length; i++)
                {
                    var rows = gen.RowsOfQuery[i];
                    for (int c = 0; c < rows.Count; c++) sums[offsets[indices[i]] + c] = s[rows[c]];
                }
            }
        }
        finally
        {
            if (wasTraining) _backbone.train();
        }
        _sums = sums;
        _offsets = offsets;
    }

    /// <summary>The cache as a named checkpoint tensor (none without a cache).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> CheckpointTensors()
    {
        if (_sums is not null) yield return (CheckpointTensorName, tensor(_sums));
    }

    /// <summary>Before a restore: a placeholder of the cache's shape for the checkpoint to fill.</summary>
    public void PrepareRestore(IReadOnlyList<TrainingExample> data)
    {
        _offsets = Offsets(data, out int total);
        _sums = new float[total];
    }

    /// <summary>After a restore: reads the cache back from the restored tensors.</summary>
    public void CompleteRestore(IReadOnlyList<(string Name, Tensor Tensor)> restored)
    {
        if (_sums is null) return;
        _sums = restored.First(x => x.Name == CheckpointTensorName).Tensor.data<float>().ToArray();
    }

    private static int[] Offsets(IReadOnlyList<TrainingExample> data, out int total)
    {
        var offsets = new int[data.Count];
        total = 0;
        for (int i = 0; i < data.Count; i++) { offsets[i] = total; total += 1 + data[i].Negatives.Count; }
        return offsets;
    }
}
