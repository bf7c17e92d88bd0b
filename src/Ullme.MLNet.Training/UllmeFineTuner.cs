using System.Diagnostics;
using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tokenization;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// Fine-tunes a loaded <see cref="UllmeModel"/> into a better embedding model with the objectives of grl-spec.md:
/// contrastive InfoNCE on bidirectional embeddings, and — for decoders — the generation-side terms on the same
/// weights run causally (LM loss, preference loss, GRL consistency).
/// <para>
/// One batch of B examples (query q, positive p⁺, hard negatives N(q), optional instruction):
/// <list type="number">
/// <item>Embeddings: q (its instruction attended to but not pooled), p⁺ and every negative, through the backbone in
/// <see cref="FineTuneOptions.EmbeddingAttention"/> mode and pooled. The losses see them as leaf tensors; their
/// gradients are pushed into the weights afterwards in one backward (or chunk by chunk with GradCache).</item>
/// <item>Generation: for every candidate c ∈ {p⁺} ∪ N(q) the causal log-probs of c's tokens after
/// <c>[BOS] + prompt(q)</c> (prompt and candidate tokenized separately). Sums give log π(c|q), means give s_gen.</item>
/// <item>L = λ_cl·InfoNCE + λ_lm·NLL(p⁺) + λ_pref·pref(p⁺, hardest negative) + λ_kl·KL(P_gen ‖ P_rep); terms with
/// λ = 0 are not computed. The hardest negative is the one the policy finds most likely (highest mean token
/// log-prob). The reference π_ref is the model with its LoRA adapters switched off, or for full fine-tuning the
/// base model's log-probs computed once before the first step (kept in checkpoints).</item>
/// </list>
/// </para>
/// <para>
/// The trainer modifies the model in place: LoRA adapters are injected (and merged at the end by default), or all
/// weights are trained. Not thread-safe; do not embed with the same model while it trains.
/// </para>
/// </summary>
public sealed class UllmeFineTuner
{
    private const string ReferenceTensorName = "__reference_logprobs";

    private readonly UllmeModel _model;
    private readonly FineTuneOptions _options;
    private readonly LossWeights _weights;
    private readonly EmbeddingBackbone _backbone;
    private readonly ITextTokenizer _tokenizer;
    private readonly int _padId;
    private bool _trained;
    private readonly List<IDisposable> _batchResources = [];

    // Full fine-tuning: log π_ref(c|q) of every candidate of every training example (offsets per example).
    private float[]? _referenceSums;
    private int[]? _referenceOffsets;

    public UllmeFineTuner(UllmeModel model, FineTuneOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _options = options ?? new FineTuneOptions();
        _options.Validate();
        _weights = _options.EffectiveWeights;
        _backbone = model.Backbone;
        _tokenizer = model.Tokenizer;
        _padId = _tokenizer.PadTokenId ?? model.Config.PadTokenId ?? _tokenizer.EosTokenId ?? 0;
        if (_weights.NeedsGeneration && !_backbone.HasLanguageModelHead)
            throw new UllmeException($"Strategy {_options.Strategy} needs generation scores, but '{model.ModelId}' ({model.Config.ModelType}) has no language-model head. Use Strategy = Contrastive (or λ_lm = λ_pref = λ_kl = 0).");
        if (_options.EmbeddingAttention == AttentionMode.Causal && !_backbone.SupportsCausal)
            throw new UllmeException($"EmbeddingAttention = Causal is not possible with '{model.ModelId}' ({model.Config.ModelType}): it is a bidirectional encoder.");
        if (_options.Lora is null && model.ScalarType != ScalarType.Float32 && model.ScalarType != ScalarType.Float64)
            throw new UllmeException($"Full fine-tuning needs float32 weights (the model is loaded as {model.ScalarType}, and there are no float32 master weights); load it in float32 or train LoRA adapters.");
        if (_options.GradientCheckpointing && _backbone is not DecoderModel)
            throw new UllmeException($"GradientCheckpointing works per decoder layer; {_backbone.GetType().Name} does not expose its layers. Turn it off for this model.");
        if (_options.PreferenceLoss == PreferenceLossKind.KtoPair && _options.GenerationChunkSize is not null && _weights.Preference > 0)
            throw new UllmeException("PreferenceLoss = KtoPair needs the whole batch at once (its reference point is a batch mean); unset GenerationChunkSize.");
    }

    public FineTuneOptions Options => _options;

    /// <summary>
    /// Trains on <paramref name="data"/>; the model's weights are updated in place (LoRA merged at the end unless
    /// <see cref="FineTuneOptions.MergeLoraAtEnd"/> is false).
    /// </summary>
    public FineTuneResult Train(IReadOnlyList<TrainingExample> data, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Count == 0) throw new UllmeException("No training examples.");
        for (int i = 0; i < data.Count; i++)
        {
            var e = data[i];
            if (e is null || string.IsNullOrEmpty(e.Query) || string.IsNullOrEmpty(e.Positive) || e.Negatives is null || e.Negatives.Any(string.IsNullOrEmpty))
                throw new UllmeException($"Training example {i} needs a non-empty query and positive and non-empty negatives.");
        }
        if (_trained) throw new UllmeException("This fine-tuner has already trained; create a new one (with the tuned model) to train again.");
        _trained = true;

        var o = _options;
        int microPerEpoch = o.KeepPartialBatch ? (data.Count + o.BatchSize - 1) / o.BatchSize : data.Count / o.BatchSize;
        if (microPerEpoch == 0)
            throw new UllmeException($"BatchSize {o.BatchSize} exceeds the {data.Count} training examples and KeepPartialBatch is off.");
        int stepsPerEpoch = (microPerEpoch + o.AccumulationSteps - 1) / o.AccumulationSteps;
        int totalSteps = o.MaxSteps ?? o.Epochs * stepsPerEpoch;
        string fingerprint = $"{o.Fingerprint()}-{_model.ModelId}-{data.Count}";

        TrainingSeed.Apply(o.Seed);
        if (o.Lora is not null && LoraInjector.FindLayers(_backbone).Count == 0)
            LoraInjector.Apply(_backbone, o.Lora);
        else if (o.Lora is null)
            foreach (var (_, p) in _backbone.named_parameters()) p.requires_grad = true;

        var schedule = new LearningRateSchedule { PeakLearningRate = o.Optimizer.LearningRate, TotalSteps = totalSteps, WarmupSteps = o.WarmupSteps, Decay = o.Decay };
        using var stepper = new OptimizerStepper(_backbone.named_parameters(), o.Optimizer, schedule, o.MaxGradientNorm, o.AccumulationSteps);

        int epoch = 0, position = 0;
        long examplesSeen = 0;
        int? resumedFrom = null;
        string? lastCheckpoint = null;
        if (o.Resume && TrainingCheckpoint.FindLatest(o.CheckpointDirectory!) is { } latest)
        {
            var state = RestoreCheckpoint(latest, stepper, data, fingerprint);
            stepper.StepsDone = state.Step;
            epoch = state.Epoch;
            position = state.PositionInEpoch;
            examplesSeen = (long)epoch * data.Count + position;
            resumedFrom = state.Step;
            lastCheckpoint = latest;
        }
        if (_weights.Preference > 0 && !o.ReferenceFree && o.Lora is null && _referenceSums is null)
            ComputeReferenceCache(data);

        var history = new List<TrainingProgress>();
        var clock = Stopwatch.StartNew();
        long examplesThisRun = 0;
        int[] order = TrainingSeed.EpochOrder(o.Seed, epoch, data.Count, o.Shuffle);
        _backbone.train();
        try
        {
            while (stepper.StepsDone < totalSteps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (o.CheckpointDirectory is not null)
                        lastCheckpoint = SaveCheckpoint(stepper, epoch, position, fingerprint, history.LastOrDefault()?.Losses);
                    cancellationToken.ThrowIfCancellationRequested();
                }
                var parts = new List<LossBreakdown>();
                for (int micro = 0; micro < o.AccumulationSteps; micro++)
                {
                    if (position >= data.Count || (!o.KeepPartialBatch && data.Count - position < o.BatchSize))
                    {
                        epoch++;
                        position = 0;
                        order = TrainingSeed.EpochOrder(o.Seed, epoch, data.Count, o.Shuffle);
                    }
                    int count = Math.Min(o.BatchSize, data.Count - position);
                    var indices = order.AsSpan(position, count).ToArray();
                    position += count;
                    examplesSeen += count;
                    examplesThisRun += count;
                    using var scope = NewDisposeScope();
                    parts.Add(RunBatch(indices.Select(i => data[i]).ToArray(), indices, stepper));
                    stepper.CompleteMicroBatch();
                }
                var report = stepper.Step();
                var losses = Average(parts);
                var p = new TrainingProgress(report.Step + 1, totalSteps, epoch, examplesSeen, report.LearningRate, losses,
                    report.GradientNorm, report.Applied, report.SkipReason, clock.Elapsed);
                history.Add(p);
                progress?.Report(p);
                if (o.CheckpointDirectory is not null && o.CheckpointEvery > 0 && stepper.StepsDone % o.CheckpointEvery == 0 && stepper.StepsDone < totalSteps)
                    lastCheckpoint = SaveCheckpoint(stepper, epoch, position, fingerprint, losses);
            }
            if (o.CheckpointDirectory is not null)
                lastCheckpoint = SaveCheckpoint(stepper, epoch, position, fingerprint, history.LastOrDefault()?.Losses);
        }
        finally
        {
            _backbone.eval();
        }

        if (o.Lora is not null && o.MergeLoraAtEnd) LoraInjector.MergeAndUnload(_backbone);
        clock.Stop();
        return new FineTuneResult(stepper.StepsDone, stepper.StepsSkipped, resumedFrom, history, lastCheckpoint, clock.Elapsed,
            examplesThisRun / Math.Max(1e-9, clock.Elapsed.TotalSeconds));
    }

    /// <summary>
    /// The loss terms of one batch at the current weights, without training (eval mode, no gradients). All terms
    /// whose weight is non-zero are computed. Before training the reference model is the current model (so DPO is
    /// ln 2); with LoRA adapters in place it is the model with adapters off.
    /// </summary>
    public LossBreakdown ComputeLosses(IReadOnlyList<TrainingExample> batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Count == 0) throw new UllmeException("ComputeLosses needs at least one example.");
        bool wasTraining = _backbone.training;
        _backbone.eval();
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return RunBatch(batch, null, null);
        }
        finally
        {
            if (wasTraining) _backbone.train();
        }
    }

    /// <summary>
    /// For tests: prepares the parameters as <see cref="Train"/> would (adapters injected, or everything
    /// trainable), runs one batch forward and backward in training mode, and leaves the gradients on the
    /// parameters (no optimizer step). The reference model is as in <see cref="ComputeLosses"/>.
    /// </summary>
    internal LossBreakdown BackwardOnce(IReadOnlyList<TrainingExample> batch)
    {
        TrainingSeed.Apply(_options.Seed);
        if (_options.Lora is not null && LoraInjector.FindLayers(_backbone).Count == 0)
            LoraInjector.Apply(_backbone, _options.Lora);
        else if (_options.Lora is null)
            foreach (var (_, p) in _backbone.named_parameters()) p.requires_grad = true;
        var schedule = new LearningRateSchedule { PeakLearningRate = 0, TotalSteps = 1 };
        using var stepper = new OptimizerStepper(_backbone.named_parameters(), _options.Optimizer, schedule, null, 1);
        _backbone.train();
        try
        {
            using var scope = NewDisposeScope();
            var losses = RunBatch(batch, null, stepper);
            if (stepper.IsPoisoned) throw new UllmeException("BackwardOnce: the batch produced a non-finite loss.");
            return losses;
        }
        finally
        {
            _backbone.eval();
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // One batch: embeddings, generation scores, losses, and (when training) the backward passes.
    // ------------------------------------------------------------------------------------------------------------

    private LossBreakdown RunBatch(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper)
    {
        try
        {
            return RunBatchCore(batch, indices, stepper);
        }
        finally
        {
            foreach (var r in _batchResources) r.Dispose();
            _batchResources.Clear();
        }
    }

    private LossBreakdown RunBatchCore(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper)
    {
        var o = _options;
        bool training = stepper is not null;
        int b = batch.Count;

        // Hard negatives flattened, with their owner.
        var negOwner = new List<int>();
        var negTexts = new List<string>();
        for (int q = 0; q < b; q++)
            foreach (var n in batch[q].Negatives) { negOwner.Add(q); negTexts.Add(n); }

        // ---- embeddings (as leaves) ----
        EmbeddingLeaves? emb = null;
        if (_weights.NeedsEmbeddings)
        {
            var groups = new List<TokenBatch>
            {
                EncodeTexts(batch.Select(e => e.Query).ToList(), batch.Select(e => e.Instruction).ToList()),
                EncodeTexts(batch.Select(e => e.Positive).ToList(), null),
            };
            if (negTexts.Count > 0) groups.Add(EncodeTexts(negTexts, null));
            emb = EmbeddingLeaves.Create(groups, Embed, training, o.GradCacheChunkSize);
        }
        var eq = emb?.Leaves[0];
        var ep = emb?.Leaves[1];
        var en = emb is not null && negTexts.Count > 0 ? emb.Leaves[2] : null;

        double total = 0;
        double? cl = null, lm = null, pref = null, kl = null;

        // ---- contrastive ----
        if (_weights.Contrastive > 0)
        {
            var loss = o.ContrastiveLoss.Compute(eq!, ep!, en);
            cl = loss.item<float>();
            total += _weights.Contrastive * cl.Value;
            stepper?.BackwardPart(loss * _weights.Contrastive, "contrastive loss");
        }

        // ---- generation terms, chunked by whole queries ----
        if (_weights.NeedsGeneration && !(stepper?.IsPoisoned ?? false))
        {
            var gen = EncodeGeneration(batch);
            int pairs = Enumerable.Range(0, b).Count(q => batch[q].Negatives.Count > 0);
            double lmSum = 0, prefSum = 0, klSum = 0;
            int chunkQueries = o.GenerationChunkSize is { } cs ? Math.Max(1, cs / Math.Max(1, 1 + negTexts.Count / Math.Max(1, b))) : b;
            for (int q0 = 0; q0 < b; q0 += chunkQueries)
            {
                if (stepper?.IsPoisoned ?? false) break;
                int q1 = Math.Min(b, q0 + chunkQueries);
                using var scope = NewDisposeScope();
                var chunk = gen.Select(q0, q1);
                var (lp, mask) = PolicyTokenLogProbs(chunk);                                    // [M, T]
                Tensor chunkLoss = zeros(1).squeeze();
                if (_weights.LanguageModel > 0)
                {
                    var rows = tensor(chunk.PositiveRows.Select(r => (long)r).ToArray());
                    var lmLoss = o.LanguageModelObjective.Compute(lp.index_select(0, rows), mask.index_select(0, rows));
                    double share = o.LanguageModelReduction == LanguageModelReduction.TokenMean
                        ? (double)chunk.PositiveTokens / gen.PositiveTokens
                        : (double)(q1 - q0) / b;
                    lmSum += lmLoss.item<float>() * share;
                    chunkLoss = chunkLoss + lmLoss * (share * _weights.LanguageModel);
                }
                if (_weights.Preference > 0 || _weights.Consistency > 0)
                {
                    var sums = TokenLogProbs.Sum(lp, mask);                                      // [M]
                    var means = TokenLogProbs.Mean(lp, mask);                                    // [M]
                    if (_weights.Preference > 0)
                    {
                        var prefRows = PreferencePairs(chunk, means);
                        if (prefRows.Count > 0)
                        {
                            var chosenIdx = tensor(prefRows.Select(r => (long)r.Chosen).ToArray());
                            var rejectedIdx = tensor(prefRows.Select(r => (long)r.Rejected).ToArray());
                            Tensor? refChosen = null, refRejected = null;
                            if (!o.ReferenceFree)
                            {
                                var refSums = ReferenceSums(chunk, sums, indices, q0);
                                refChosen = refSums.index_select(0, chosenIdx);
                                refRejected = refSums.index_select(0, rejectedIdx);
                            }
                            var prefLoss = o.PreferenceObjective.Compute(sums.index_select(0, chosenIdx), sums.index_select(0, rejectedIdx), refChosen, refRejected);
                            double share = (double)prefRows.Count / pairs;
                            prefSum += prefLoss.item<float>() * share;
                            chunkLoss = chunkLoss + prefLoss * (share * _weights.Preference);
                        }
                    }
                    if (_weights.Consistency > 0)
                    {
                        var scores = o.GenerationScore == GenerationScore.Mean ? means : sums;
                        var klLoss = ConsistencyChunk(chunk, scores, eq!, ep!, en);
                        double share = (double)(q1 - q0) / b;
                        klSum += klLoss.item<float>() * share;
                        chunkLoss = chunkLoss + klLoss * (share * _weights.Consistency);
                    }
                }
                stepper?.BackwardPart(chunkLoss, "generation loss");
            }
            if (_weights.LanguageModel > 0) { lm = lmSum; total += _weights.LanguageModel * lmSum; }
            if (_weights.Preference > 0 && pairs > 0) { pref = prefSum; total += _weights.Preference * prefSum; }
            if (_weights.Consistency > 0) { kl = klSum; total += _weights.Consistency * klSum; }
        }

        // ---- push the embedding gradients into the weights ----
        if (emb is not null && stepper is not null && !stepper.IsPoisoned)
            emb.Backward();
        emb?.Dispose();
        return new LossBreakdown(total, cl, lm, pref, kl);
    }

    /// <summary>KL between generation and representation candidate distributions for the chunk's queries.</summary>
    private Tensor ConsistencyChunk(GenerationBatch chunk, Tensor scores, Tensor eq, Tensor ep, Tensor? en)
    {
        int qn = chunk.QueryCount;
        int k = chunk.MaxCandidates;
        // Candidate c of query q: its positive (row q of ep) or its j-th negative (row of en), padded to K.
        var all = en is null ? ep : cat([ep, en], 0);                                       // [B + N, H]
        var candidateRow = new long[qn * k];
        var scoreRow = new long[qn * k];
        var valid = new bool[qn * k];
        for (int i = 0; i < qn; i++)
        {
            int q = chunk.FirstQuery + i;
            var rows = chunk.RowsOfQuery[i];
            for (int c = 0; c < rows.Count; c++)
            {
                candidateRow[i * k + c] = c == 0 ? q : ep.shape[0] + chunk.NegativeIndexOfRow[rows[c]];
                scoreRow[i * k + c] = rows[c];
                valid[i * k + c] = true;
            }
        }
        var candidates = all.index_select(0, tensor(candidateRow)).reshape(qn, k, -1);     // [Q, K, H]
        var genScores = scores.index_select(0, tensor(scoreRow)).reshape(qn, k);           // [Q, K]
        var queries = eq.index_select(0, arange(chunk.FirstQuery, chunk.FirstQuery + qn, dtype: ScalarType.Int64));
        var mask = tensor(valid).reshape(qn, k);
        return _options.ConsistencyLoss.Compute(queries, candidates, genScores, mask);
    }

    /// <summary>Per query with negatives: (row of p⁺, row of the negative with the highest mean log-prob).</summary>
    private static List<(int Chosen, int Rejected)> PreferencePairs(GenerationBatch chunk, Tensor means)
    {
        var m = means.detach().to(ScalarType.Float64).cpu().data<double>().ToArray();
        var result = new List<(int, int)>();
        foreach (var rows in chunk.RowsOfQuery)
        {
            if (rows.Count < 2) continue;
            int best = rows[1];
            for (int c = 2; c < rows.Count; c++) if (m[rows[c]] > m[best]) best = rows[c];
            result.Add((rows[0], best));
        }
        return result;
    }

    /// <summary>log π_ref of every row of the chunk (no gradient).</summary>
    private Tensor ReferenceSums(GenerationBatch chunk, Tensor policySums, int[]? indices, int firstQuery)
    {
        if (LoraInjector.FindLayers(_backbone) is { Count: > 0 })
        {
            using var noGrad = no_grad();
            using var off = LoraInjector.Disabled(_backbone);
            var (lp, mask) = PolicyTokenLogProbs(chunk);
            return TokenLogProbs.Sum(lp, mask);
        }
        if (_referenceSums is not null && indices is not null)
        {
            var values = new float[chunk.Rows];
            for (int i = 0; i < chunk.QueryCount; i++)
            {
                int example = indices[firstQuery + i];
                var rows = chunk.RowsOfQuery[i];
                for (int c = 0; c < rows.Count; c++) values[rows[c]] = _referenceSums[_referenceOffsets![example] + c];
            }
            return tensor(values);
        }
        if (!_trained)
            return policySums.detach();                  // untrained: the policy is the reference
        throw new UllmeException("After training, the reference model's log-probabilities exist only for the training examples (full fine-tuning) or not at all (merged adapters); compute preference losses with ReferenceFree, or before merging the adapters.");
    }

    /// <summary>log π_ref for every candidate of every example, with the current (base) weights.</summary>
    private void ComputeReferenceCache(IReadOnlyList<TrainingExample> data)
    {
        var offsets = new int[data.Count];
        int total = 0;
        for (int i = 0; i < data.Count; i++) { offsets[i] = total; total += 1 + data[i].Negatives.Count; }
        var sums = new float[total];
        bool wasTraining = _backbone.training;
        _backbone.eval();
        try
        {
            int step = Math.Max(1, _options.BatchSize);
            for (int start = 0; start < data.Count; start += step)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var slice = data.Skip(start).Take(step).ToArray();
                var gen = EncodeGeneration(slice);
                var (lp, mask) = PolicyTokenLogProbs(gen);
                var s = TokenLogProbs.Sum(lp, mask).to(ScalarType.Float32).cpu().data<float>().ToArray();
                for (int i = 0; i < slice.Length; i++)
                {
                    var rows = gen.RowsOfQuery[i];
                    for (int c = 0; c < rows.Count; c++) sums[offsets[start + i] + c] = s[rows[c]];
                }
            }
        }
        finally
        {
            if (wasTraining) _backbone.train();
        }
        _referenceSums = sums;
        _referenceOffsets = offsets;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Model calls.
    // ------------------------------------------------------------------------------------------------------------

    /// <summary>Pooled embeddings [n, H] (float32) of a token batch.</summary>
    private Tensor Embed(TokenBatch batch)
    {
        using var scope = NewDisposeScope();
        var hidden = BackboneForward(batch.InputIds, batch.AttentionMask, _options.EmbeddingAttention);
        return Pooler.Pool(hidden, batch.AttentionMask, batch.PoolingMask, _options.Pooling).MoveToOuterDisposeScope();
    }

    /// <summary>Causal token log-probs [M, T] of the candidate tokens, and their mask.</summary>
    private (Tensor LogProbs, Tensor Mask) PolicyTokenLogProbs(GenerationBatch gen)
    {
        var hidden = BackboneForward(gen.InputIds, gen.AttentionMask, AttentionMode.Causal);
        var lp = TokenLogProbs.ForInputs(hidden, gen.InputIds, gen.ScoreMask, _backbone.LanguageModelLogits);
        return (lp, gen.ScoreMask);
    }

    /// <summary>The backbone forward, with per-layer activation checkpointing for decoders when asked.</summary>
    private Tensor BackboneForward(Tensor ids, Tensor mask, AttentionMode mode)
    {
        if (!_options.GradientCheckpointing || !is_grad_enabled() || _backbone is not DecoderModel decoder)
            return _backbone.Forward(ids, mask, mode);
        // The layer inputs (rotary tables, masks) must outlive the backward, which recomputes the layers: they leave
        // every dispose scope and are released when the batch is done.
        var hidden = decoder.Embed(ids);
        var inputs = decoder.PrepareInputs(mask, mode, null, hidden.dtype);
        foreach (var t in new[] { inputs.Cos, inputs.Sin, inputs.FullMask, inputs.SlidingMask })
            t?.DetachFromDisposeScope();
        _batchResources.Add(inputs);
        for (int i = 0; i < decoder.model.layers.Count; i++)
        {
            int layer = i;
            hidden = ActivationCheckpoint.Apply(h => decoder.ForwardLayer(layer, h, inputs), hidden);
        }
        return decoder.FinalNorm(hidden);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Tokenization.
    // ------------------------------------------------------------------------------------------------------------

    private TokenBatch EncodeTexts(IReadOnlyList<string> texts, IReadOnlyList<string?>? instructions)
    {
        var rows = new EncodedText[texts.Count];
        for (int i = 0; i < texts.Count; i++)
            rows[i] = TextEncoding.Encode(_tokenizer, texts[i], instructions?[i], _options.MaxLength);
        var padded = new PaddedBatch(rows, _padId, _model.Device);
        return new TokenBatch(padded.InputIds, padded.AttentionMask, padded.PoolingMask);
    }

    /// <summary>Prompt + candidate sequences for every candidate of every query, right-padded.</summary>
    private GenerationBatch EncodeGeneration(IReadOnlyList<TrainingExample> batch)
    {
        var rows = new List<(int[] Ids, int ScoreFrom)>();
        var rowsOfQuery = new List<List<int>>();
        var negativeIndexOfRow = new List<int>();
        var positiveRows = new List<int>();
        long positiveTokens = 0;
        int negIndex = 0;
        var prefix = _tokenizer.PrefixTokenIds;
        for (int q = 0; q < batch.Count; q++)
        {
            var e = batch[q];
            var prompt = GenerationPrompt.EncodePrompt(_tokenizer, _options.BuildGenerationPrompt(e.Query, e.Instruction));
            var mine = new List<int>();
            var candidates = new List<string> { e.Positive };
            candidates.AddRange(e.Negatives);
            for (int c = 0; c < candidates.Count; c++)
            {
                var cand = _tokenizer.Encode(candidates[c], addSpecialTokens: false).ToArray();
                if (cand.Length == 0) throw new UllmeException($"The candidate text \"{candidates[c]}\" tokenizes to nothing.");
                var joined = GenerationPrompt.Join(prompt, cand, prefix.Count, _options.MaxGenerationLength);
                var (ids, from) = (joined.InputIds.ToArray(), joined.ScoreFrom);
                mine.Add(rows.Count);
                negativeIndexOfRow.Add(c == 0 ? -1 : negIndex++);
                if (c == 0) { positiveRows.Add(rows.Count); positiveTokens += ids.Length - from; }
                rows.Add((ids, from));
            }
            rowsOfQuery.Add(mine);
        }
        return GenerationBatch.Create(rows, rowsOfQuery, negativeIndexOfRow, positiveRows, positiveTokens, _padId, _model.Device);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Checkpoints.
    // ------------------------------------------------------------------------------------------------------------

    private List<(string, Tensor)> CheckpointTensors()
    {
        var list = _options.Lora is not null
            ? LoraInjector.AdapterParameters(_backbone).Select(p => (p.Name, (Tensor)p.Parameter)).ToList()
            : _backbone.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)).ToList();
        if (_referenceSums is not null) list.Add((ReferenceTensorName, tensor(_referenceSums)));
        return list;
    }

    private string SaveCheckpoint(OptimizerStepper stepper, int epoch, int position, string fingerprint, LossBreakdown? last)
    {
        using var scope = NewDisposeScope();
        var state = new TrainingCheckpointState
        {
            Step = stepper.StepsDone,
            Epoch = epoch,
            PositionInEpoch = position,
            StepsSkipped = stepper.StepsSkipped,
            Seed = _options.Seed,
            Weights = _options.Lora is null ? CheckpointWeights.Full : CheckpointWeights.Adapter,
            Fingerprint = fingerprint,
            LastLosses = last?.ToDictionary(),
        };
        return TrainingCheckpoint.Save(_options.CheckpointDirectory!, state, CheckpointTensors(), stepper.Optimizer, _options.KeepCheckpoints);
    }

    private TrainingCheckpointState RestoreCheckpoint(string checkpoint, OptimizerStepper stepper, IReadOnlyList<TrainingExample> data, string fingerprint)
    {
        using var scope = NewDisposeScope();
        var tensors = CheckpointTensors();
        if (_options.Lora is null && _weights.Preference > 0 && !_options.ReferenceFree)
        {
            // The reference cache travels in the checkpoint (the base weights are gone after the first step).
            int total = data.Sum(e => 1 + e.Negatives.Count);
            _referenceSums = new float[total];
            _referenceOffsets = new int[data.Count];
            for (int i = 0, o = 0; i < data.Count; i++) { _referenceOffsets[i] = o; o += 1 + data[i].Negatives.Count; }
            tensors = CheckpointTensors();
        }
        var state = TrainingCheckpoint.Restore(checkpoint, tensors, stepper.Optimizer, fingerprint);
        if (_referenceSums is not null)
        {
            var t = tensors.First(x => x.Item1 == ReferenceTensorName).Item2;
            _referenceSums = t.data<float>().ToArray();
        }
        return state;
    }

    private static LossBreakdown Average(List<LossBreakdown> parts)
    {
        static double? Mean(IEnumerable<double?> xs)
        {
            var v = xs.Where(x => x.HasValue).Select(x => x!.Value).ToList();
            return v.Count == 0 ? null : v.Average();
        }
        return new LossBreakdown(parts.Average(p => p.Total), Mean(parts.Select(p => p.Contrastive)), Mean(parts.Select(p => p.LanguageModel)),
            Mean(parts.Select(p => p.Preference)), Mean(parts.Select(p => p.Consistency)));
    }
}
