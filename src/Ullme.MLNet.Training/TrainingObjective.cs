using Ullme.MLNet.Tensors;
using TorchSharp;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>The embeddings of one batch as the losses see them (leaf tensors that collect ∂L/∂e).</summary>
/// <param name="Queries">[B, H].</param>
/// <param name="Positives">[B, H]: row q is query q's positive.</param>
/// <param name="Negatives">[N, H], the batch's hard negatives flattened in query order, or null when there are none.</param>
internal sealed record EmbeddingInputs(Tensor Queries, Tensor Positives, Tensor? Negatives)
{
    /// <summary>[E, H] the batch's extra positives, flattened in query order, or null when there are none.</summary>
    public Tensor? ExtraPositives { get; init; }

    /// <summary>The query of each extra positive.</summary>
    public IReadOnlyList<int> ExtraOwners { get; init; } = [];
}

/// <summary>
/// The training objective of grl-spec.md, one concept: leaf embeddings and generation log-probs in, the weighted
/// loss to back-propagate and a <see cref="LossBreakdown"/> out.
/// <code>
///   L = λ_cl·InfoNCE(q, p⁺, N) + λ_lm·NLL(p⁺ | prompt(q)) + λ_pref·pref(p⁺, hardest negative) + λ_kl·KL(P_gen ‖ P_rep)
/// </code>
/// Terms with λ = 0 are not computed. The generation terms arrive a chunk of whole queries at a time
/// (<see cref="Generation"/>); each chunk's share of a batch mean is weighted so that the sum over chunks is the
/// whole batch's loss. The preference pair of a query is its positive against the negative the policy finds most
/// likely (<see cref="PreferencePairs"/>); the reference log-probs come from the caller (<see cref="ReferencePolicy"/>).
/// In the consistency term the generation side is the teacher (detached by <see cref="GrlConsistencyLoss"/>): only the
/// representation side receives its gradient.
/// </summary>
internal sealed class TrainingObjective
{
    private readonly FineTuneOptions _options;
    private readonly ContrastiveLoss _contrastive;
    private readonly MatryoshkaLoss? _matryoshka;
    private readonly LanguageModelLoss _languageModel;
    private readonly PreferenceLoss _preference;
    private readonly GrlConsistencyLoss _consistency;

    public TrainingObjective(FineTuneOptions options)
    {
        _options = options;
        Weights = options.EffectiveWeights;
        _contrastive = options.ContrastiveLoss;
        _matryoshka = options.Matryoshka;
        _languageModel = options.LanguageModelObjective;
        _preference = options.PreferenceObjective;
        _consistency = options.ConsistencyLoss;
    }

    public LossWeights Weights { get; }

    /// <summary>The running sums of one batch's terms.</summary>
    internal sealed class Tally
    {
        internal Tally(int batchSize, int pairs, long positiveTokens)
        {
            BatchSize = batchSize;
            Pairs = pairs;
            PositiveTokens = positiveTokens;
        }

        internal int BatchSize { get; }
        /// <summary>The batch's false negatives [Q, Q + N] by text, or null (masking off, or none).</summary>
        internal bool[,]? Excluded { get; init; }
        /// <summary>Queries of the batch that have a preference pair (at least one negative).</summary>
        internal int Pairs { get; }
        /// <summary>Scored tokens of all positives of the batch (the LM loss's token-mean denominator).</summary>
        internal long PositiveTokens { get; }
        internal double? Contrastive { get; set; }
        internal double LanguageModel { get; set; }
        internal double Preference { get; set; }
        internal double Consistency { get; set; }
        internal bool GenerationComputed { get; set; }
    }

    /// <summary>Starts the tally of <paramref name="batch"/>; <paramref name="generation"/> is its whole generation
    /// batch (null when no generation term is on).</summary>
    public Tally Begin(IReadOnlyList<TrainingExample> batch, GenerationBatch? generation) =>
        new(batch.Count, batch.Count(e => e.Negatives.Count > 0), generation?.PositiveTokens ?? 0) { Excluded = Excluded(batch) };

    private EmbeddingEngine? _guide;

    /// <summary>The candidates left out of each query's negatives: equal texts (<see cref="FineTuneOptions.MaskFalseNegatives"/>)
    /// and those the guide model scores above the positive (<see cref="FineTuneOptions.GuideModel"/>); null when none.</summary>
    private bool[,]? Excluded(IReadOnlyList<TrainingExample> batch)
    {
        if (Weights.Contrastive <= 0 || (!_options.MaskFalseNegatives && _options.GuideModel is null)) return null;
        var positives = batch.Select(e => e.Positive).ToList();
        // Candidate columns: [positives | hard negatives | extra positives], the contrastive loss's order.
        var negatives = batch.SelectMany(e => e.Negatives).Concat(TrainingBatchEncoder.ExtraPositives(batch).Texts).ToList();
        var byText = _options.MaskFalseNegatives ? ContrastiveLoss.FalseNegatives(positives, negatives) : null;
        bool[,]? byGuide = null;
        if (_options.GuideModel is { } guide)
        {
            _guide ??= new EmbeddingEngine(guide);
            var g = _guide.Embed([.. batch.Select(e => e.Query), .. positives, .. negatives]);
            int q = batch.Count;
            byGuide = ContrastiveLoss.GuidedFalseNegatives(g[..q], g[q..(2 * q)], g[(2 * q)..]);
        }
        if (byText is null) return byGuide;
        if (byGuide is null) return byText;
        for (int i = 0; i < byText.GetLength(0); i++)
            for (int j = 0; j < byText.GetLength(1); j++)
                byText[i, j] |= byGuide[i, j];
        return byText;
    }

    /// <summary>λ_cl·InfoNCE over the batch (in-batch positives and every hard negative); null when λ_cl = 0.</summary>
    public Tensor? Contrastive(Tally tally, EmbeddingInputs e)
    {
        if (Weights.Contrastive <= 0) return null;
        using var excluded = tally.Excluded is { } mask ? torch.tensor(mask, device: e.Queries.device) : null;
        var extra = e.ExtraPositives is { } x ? (x, e.ExtraOwners) : ((Tensor, IReadOnlyList<int>)?)null;
        var loss = _matryoshka is not null
            ? _matryoshka.Compute(e.Queries, e.Positives, e.Negatives, excluded, extra)
            : extra is { } multi
                ? _contrastive.ComputeMultiPositive(e.Queries, e.Positives, e.Negatives, multi.Item1, multi.Item2, excluded)
                : _contrastive.ComputeMasked(e.Queries, e.Positives, e.Negatives, excluded);
        tally.Contrastive = Value(loss);
        return Scaled(loss, Weights.Contrastive);
    }

    /// <summary>
    /// The generation terms of one chunk of whole queries, weighted by the chunk's share of the batch: null when the
    /// chunk contributes nothing.
    /// </summary>
    /// <param name="tally">The batch's tally.</param>
    /// <param name="chunk">The chunk's generation rows.</param>
    /// <param name="tokenLogProbs">[M, T] causal token log-probs of the chunk's rows (0 off the candidate tokens).</param>
    /// <param name="e">The batch's embedding leaves (the consistency term's representation side), or null when
    /// λ_kl = 0.</param>
    /// <param name="referenceSums">log π_ref of the chunk's rows given the policy's sums (used unless reference-free).</param>
    public Tensor? Generation(Tally tally, GenerationBatch chunk, Tensor tokenLogProbs, EmbeddingInputs? e, Func<GenerationBatch, Tensor, Tensor> referenceSums)
    {
        tally.GenerationComputed = true;
        var mask = chunk.ScoreMask;
        Tensor? chunkLoss = null;
        if (Weights.LanguageModel > 0)
        {
            var rows = RowIndex(chunk.PositiveRows, tokenLogProbs.device);
            var lmLoss = _languageModel.Compute(tokenLogProbs.index_select(0, rows), mask.index_select(0, rows));
            double share = _options.LanguageModelReduction == LanguageModelReduction.TokenMean
                ? (double)chunk.PositiveTokens / tally.PositiveTokens
                : (double)chunk.QueryCount / tally.BatchSize;
            tally.LanguageModel += Value(lmLoss) * share;
            chunkLoss = Add(chunkLoss, Scaled(lmLoss, share * Weights.LanguageModel));
        }
        if (Weights.Preference > 0 || Weights.Consistency > 0)
        {
            var sums = TokenLogProbs.Sum(tokenLogProbs, mask);                                 // [M]
            var means = TokenLogProbs.Mean(tokenLogProbs, mask);                               // [M]
            if (Weights.Preference > 0)
            {
                var pairs = PreferencePairs.Mine(chunk, means);
                if (pairs.Count > 0)
                {
                    var chosen = RowIndex(pairs.Select(p => p.Chosen).ToList(), sums.device);
                    var rejected = RowIndex(pairs.Select(p => p.Rejected).ToList(), sums.device);
                    Tensor? refChosen = null, refRejected = null;
                    if (!_options.ReferenceFree)
                    {
                        var reference = referenceSums(chunk, sums);
                        refChosen = reference.index_select(0, chosen);
                        refRejected = reference.index_select(0, rejected);
                    }
                    var prefLoss = _preference.Compute(sums.index_select(0, chosen), sums.index_select(0, rejected), refChosen, refRejected);
                    double share = (double)pairs.Count / tally.Pairs;
                    tally.Preference += Value(prefLoss) * share;
                    chunkLoss = Add(chunkLoss, Scaled(prefLoss, share * Weights.Preference));
                }
            }
            if (Weights.Consistency > 0)
            {
                var scores = _options.GenerationScore == GenerationScore.Mean ? means : sums;
                var klLoss = Consistency(chunk, scores, e ?? throw new InvalidOperationException("The consistency term needs the embeddings."));
                double share = (double)chunk.QueryCount / tally.BatchSize;
                tally.Consistency += Value(klLoss) * share;
                chunkLoss = Add(chunkLoss, Scaled(klLoss, share * Weights.Consistency));
            }
        }
        return chunkLoss;
    }

    /// <summary>The batch's loss terms and their weighted total (terms not computed are null).</summary>
    public LossBreakdown Breakdown(Tally tally)
    {
        double total = 0;
        double? lm = null, pref = null, kl = null;
        if (tally.Contrastive is { } cl) total += Weights.Contrastive * cl;
        if (tally.GenerationComputed)
        {
            if (Weights.LanguageModel > 0) { lm = tally.LanguageModel; total += Weights.LanguageModel * lm.Value; }
            if (Weights.Preference > 0 && tally.Pairs > 0) { pref = tally.Preference; total += Weights.Preference * pref.Value; }
            if (Weights.Consistency > 0) { kl = tally.Consistency; total += Weights.Consistency * kl.Value; }
        }
        return new LossBreakdown(total, tally.Contrastive, lm, pref, kl);
    }

    /// <summary>KL between the generation and representation candidate distributions of the chunk's queries.</summary>
    private Tensor Consistency(GenerationBatch chunk, Tensor scores, EmbeddingInputs e)
    {
        int qn = chunk.QueryCount;
        int k = chunk.MaxCandidates;
        var ep = e.Positives;
        // Candidate c of query q: its positive (row q of ep) or its j-th negative (row of en), padded to K.
        var all = e.Negatives is null ? ep : cat([ep, e.Negatives], 0);                    // [B + N, H]
        var candidateRow = new long[qn * k];
        var scoreRow = new long[qn * k];
        var valid = new bool[qn * k];
        var queryRow = new long[qn];
        for (int i = 0; i < qn; i++)
        {
            int q = chunk.FirstQuery + i;
            queryRow[i] = q;
            var rows = chunk.RowsOfQuery[i];
            for (int c = 0; c < rows.Count; c++)
            {
                candidateRow[i * k + c] = c == 0 ? q : ep.shape[0] + chunk.NegativeIndexOfRow[rows[c]];
                scoreRow[i * k + c] = rows[c];
                valid[i * k + c] = true;
            }
        }
        var candidates = all.index_select(0, tensor(candidateRow).to(all.device)).reshape(qn, k, -1);   // [Q, K, H]
        var genScores = scores.index_select(0, tensor(scoreRow).to(scores.device)).reshape(qn, k);      // [Q, K]
        var queries = e.Queries.index_select(0, tensor(queryRow).to(e.Queries.device));                 // [Q, H]
        var mask = tensor(valid).reshape(qn, k).to(scores.device);
        return _consistency.Compute(queries, candidates, genScores, mask);
    }

    private static Tensor RowIndex(IReadOnlyList<int> rows, Device device) =>
        tensor(rows.Select(r => (long)r).ToArray()).to(device);

    /// <summary>t · w with the factor held as a Scalar across the native call (see docs/training.md, Scalar lifetime).</summary>
    private static Tensor Scaled(Tensor t, double w)
    {
        using var factor = w.ToScalar();
        return t.mul(factor);
    }

    /// <summary>A loss term's value as the breakdown reports it (float32, as computed for float32 models).</summary>
    private static float Value(Tensor loss) => loss.dtype == ScalarType.Float32 ? loss.item<float>() : loss.to(ScalarType.Float32).item<float>();

    private static Tensor Add(Tensor? sum, Tensor term) => sum is null ? term : sum.Add(term);
}
