using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>One micro-batch forward and, with a stepper, backward: the step the training loop runs.</summary>
internal interface ITrainingStep
{
    /// <param name="batch">The examples.</param>
    /// <param name="indices">Their indices in the training data, or null.</param>
    /// <param name="stepper">Receives the backward passes; null evaluates only.</param>
    LossBreakdown Run(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper);
}

/// <summary>
/// One micro-batch, forward and (when training) backward:
/// <list type="number">
/// <item>encode the embedding groups and embed them as leaves (<see cref="EmbeddingLeaves"/>: one graph over the
/// groups' texts cut into length buckets (<see cref="LengthBuckets"/>), or GradCache's no-grad pass to be replayed);</item>
/// <item>contrastive term on the leaves, back-propagated into them;</item>
/// <item>generation terms a chunk of whole queries at a time (<see cref="FineTuneOptions.GenerationChunkSize"/>): causal
/// forward, objective, backward into the weights and the leaves, so one chunk's activations exist at a time;</item>
/// <item>the leaves' gradients pushed into the weights (GradCache replays each chunk with its saved dropout state).</item>
/// </list>
/// Without a stepper (loss evaluation) nothing is back-propagated.
/// </summary>
internal sealed class BatchStep : ITrainingStep
{
    private readonly FineTuneOptions _options;
    private readonly TrainingObjective _objective;
    private readonly TrainingBatchEncoder _encoder;
    private readonly PolicyForward _policy;
    private readonly ReferencePolicy _reference;

    public BatchStep(FineTuneOptions options, TrainingObjective objective, TrainingBatchEncoder encoder, PolicyForward policy, ReferencePolicy reference)
    {
        _options = options;
        _objective = objective;
        _encoder = encoder;
        _policy = policy;
        _reference = reference;
    }

    /// <param name="batch">The examples.</param>
    /// <param name="indices">Their indices in the training data (for the reference cache), or null.</param>
    /// <param name="stepper">Receives the backward passes; null evaluates only.</param>
    public LossBreakdown Run(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper)
    {
        try
        {
            return RunCore(batch, indices, stepper);
        }
        finally
        {
            _policy.ReleaseLayerInputs();
        }
    }

    private LossBreakdown RunCore(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper)
    {
        var weights = _objective.Weights;
        int b = batch.Count;

        // ---- embeddings (as leaves) ----
        EmbeddingLeaves? leaves = null;
        EmbeddingInputs? embeddings = null;
        if (weights.NeedsEmbeddings)
        {
            // The groups' texts embedded in length buckets (with GradCache, a chunk of a bucket at a time).
            leaves = EmbeddingLeaves.Create(_encoder.EmbeddingBuckets(batch), _policy.Embed, stepper is not null, _options.GradCacheChunkSize);
            bool hasNegatives = batch.Any(e => e.Negatives.Count > 0);
            var extraOwners = TrainingBatchEncoder.ExtraPositives(batch).Owner;
            embeddings = new EmbeddingInputs(leaves.Leaves[0], leaves.Leaves[1], hasNegatives ? leaves.Leaves[2] : null)
            {
                ExtraPositives = extraOwners.Count > 0 ? leaves.Leaves[hasNegatives ? 3 : 2] : null,
                ExtraOwners = extraOwners,
            };
        }
        try
        {
            var generation = weights.NeedsGeneration ? _encoder.Generation(batch) : null;
            var tally = _objective.Begin(batch, generation);

            if (embeddings is not null && _objective.Contrastive(tally, embeddings) is { } contrastive)
                stepper?.BackwardPart(contrastive, "contrastive loss");

            // ---- generation terms, chunked by whole queries ----
            if (generation is not null && !(stepper?.IsPoisoned ?? false))
            {
                int negatives = TrainingBatchEncoder.Negatives(batch).Texts.Count;
                int chunkQueries = _options.GenerationChunkSize is { } cs ? Math.Max(1, cs / Math.Max(1, 1 + negatives / Math.Max(1, b))) : b;
                for (int q0 = 0; q0 < b; q0 += chunkQueries)
                {
                    if (stepper?.IsPoisoned ?? false) break;
                    int q1 = Math.Min(b, q0 + chunkQueries);
                    using var scope = NewDisposeScope();
                    var chunk = generation.Select(q0, q1);
                    var lp = _policy.TokenLogProbs(chunk);                                          // [M, T]
                    var loss = _objective.Generation(tally, chunk, lp, embeddings, (c, sums) => _reference.Sums(c, sums, indices));
                    if (loss is not null) stepper?.BackwardPart(loss, "generation loss");
                }
            }

            // ---- push the embedding gradients into the weights ----
            if (leaves is not null && stepper is not null && !stepper.IsPoisoned)
                leaves.Backward();
            return _objective.Breakdown(tally);
        }
        finally
        {
            leaves?.Dispose();
        }
    }
}
