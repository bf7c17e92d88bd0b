using Ullme.MLNet.IO;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Spectre.Console;
using Ullme.Cli.Training;
using Ullme.MLNet;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Optimization;

namespace Ullme.Cli.Commands;

/// <summary>
/// <c>ullme train</c>: fine-tunes a model on JSONL triplets with one of the grl-spec objectives (contrastive,
/// contrastive + LM, contrastive + DPO, GRL) through <see cref="UllmeFineTuner"/>, and writes a ready-to-use model
/// folder (LoRA merged; Hugging Face + sentence-transformers layout) with <c>losses.csv</c>, <c>losses.png</c> and
/// <c>training.json</c>. Checkpoints every N steps make a killed run resumable with <c>--resume</c>;
/// <c>--eval-sts</c> reports STS Spearman before and after.
/// </summary>
internal static class TrainCommand
{
    private static readonly JsonSerializerOptions OptionsJson = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var data = new Option<string>("--data") { Description = "Training data, JSONL: {\"query\", \"positive\", \"negatives\": [...], \"instruction\"?} a line; for --strategy mntp|simcse plain text, one text a line (or JSONL {\"text\"}).", Required = true };
        var strategy = new Option<string>("--strategy") { Description = "contrastive | contrastive-lm | dpo | grl | mntp | simcse | auto (grl when the model has a language-model head, else contrastive). mntp (masked next-token prediction) and simcse (unsupervised SimCSE) are LLM2Vec's stages on plain text.", DefaultValueFactory = _ => "auto" };
        var output = new Option<string>("--output", "-o") { Description = "Output folder: the tuned model, losses.csv, losses.png, training.json (and checkpoints/).", Required = true };
        var steps = new Option<int?>("--steps") { Description = "Optimizer steps to run (exclusive with --epochs)." };
        var epochs = new Option<int?>("--epochs") { Description = "Passes over the data (exclusive with --steps; default 1)." };
        var batchSize = CommonOptions.Int("--batch-size", "Examples (query + positive + negatives) per step.", 32);
        var gradAccum = new Option<int>("--grad-accum") { Description = "Micro-batches of --batch-size accumulated per optimizer step.", DefaultValueFactory = _ => 1 };
        var sharedNegatives = new Option<bool>("--shared-negatives") { Description = "With --grad-accum K: the K micro-batches are one contrastive batch (every query sees all K × batch candidates), computed with GradCache a micro-batch at a time." };
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Batches in file order (default: shuffled by --seed each epoch)." };
        var gradCache = new Option<int?>("--grad-cache-chunk") { Description = "GradCache: embed N texts at a time (memory of N texts, gradients of the whole batch)." };
        var generationChunk = new Option<int?>("--generation-chunk") { Description = "Causal sequences per forward pass of the generation terms (default: the whole batch)." };
        var gradientCheckpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute each decoder layer in the backward instead of storing its activations." };
        var full = new Option<bool>("--full") { Description = "Full fine-tuning (every weight) instead of LoRA adapters." };
        var loraRank = new Option<int?>("--lora-rank") { Description = "LoRA rank r (default 16)." };
        var loraAlpha = new Option<double?>("--lora-alpha") { Description = "LoRA α (default 2 × rank)." };
        var loraDropout = new Option<double?>("--lora-dropout") { Description = "Dropout on the adapter input (default 0.1)." };
        var loraTargets = new Option<string?>("--lora-targets") { Description = "Comma-separated module names to adapt, e.g. q_proj,v_proj (default: every linear layer but lm_head)." };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate (AdamW). 1e-4 suits LoRA on 0.5–7B models; tiny models fully tuned want ~1e-3.", DefaultValueFactory = _ => 1e-4 };
        var warmup = new Option<int?>("--warmup") { Description = "Warm-up steps (default min(10% of steps, 500))." };
        var decay = new Option<string>("--decay") { Description = "cosine | linear | constant after warm-up.", DefaultValueFactory = _ => "cosine" };
        var weightDecay = new Option<double>("--weight-decay") { Description = "AdamW decoupled weight decay.", DefaultValueFactory = _ => 0 };
        var maxGradNorm = new Option<double?>("--max-grad-norm") { Description = "Clip the global gradient norm (default: no clipping)." };
        var maskFalseNegatives = new Option<bool>("--mask-false-negatives") { Description = "Leave a candidate whose text equals a query's positive (a duplicate positive, a negative that is the positive) out of that query's negatives." };
        var guideModel = new Option<string?>("--guide-model") { Description = "GISTEmbed-style guide (a model folder, Hub id or 'default'): in-batch candidates it scores above a query's positive are not that query's negatives." };
        var symmetric = new Option<bool>("--symmetric") { Description = "Symmetric InfoNCE: also train each positive to pick its own query among the batch's queries (the two directions averaged)." };
        var matryoshkaDims = new Option<string?>("--matryoshka-dims") { Description = "Matryoshka: also train the contrastive loss on these prefix widths, comma-separated (e.g. 768,512,256,128,64); embed later with --dimensions N." };
        var matryoshkaWeights = new Option<string?>("--matryoshka-weights") { Description = "One weight per --matryoshka-dims entry, comma-separated (default 1 each)." };
        var maskRatio = new Option<double>("--mask-ratio") { Description = "mntp: share of each text's tokens predicted (80% shown as --mask-token, 10% random, 10% kept).", DefaultValueFactory = _ => 0.2 };
        var maskToken = new Option<string?>("--mask-token") { Description = "mntp: the token masked positions show: unk, eos, pad, a token id, or a text that is one token (default unk, else eos)." };
        var attentionDropout = new Option<double?>("--attention-dropout") { Description = "Decoders: dropout on the attention probabilities while training (default 0.3 for simcse, else the config's attention_dropout)." };
        var from = new Option<string?>("--from") { Description = "Start from the output folder of an earlier `ullme train` (its merged weights), e.g. simcse after mntp; instead of --model." };
        var temperature = new Option<double>("--temperature") { Description = "InfoNCE temperature τ.", DefaultValueFactory = _ => 0.05 };
        var beta = new Option<double>("--beta") { Description = "Preference-loss β.", DefaultValueFactory = _ => 0.1 };
        var preferenceLoss = new Option<string>("--preference-loss") { Description = "sigmoid (DPO) | ipo | hinge | kto-pair.", DefaultValueFactory = _ => "sigmoid" };
        var referenceFree = new Option<bool>("--reference-free") { Description = "Preference loss without a reference model (log π_ref ≡ 0)." };
        var generationTemperature = new Option<double>("--generation-temperature") { Description = "GRL τ_gen.", DefaultValueFactory = _ => 1.0 };
        var lambdaCl = new Option<double?>("--lambda-cl") { Description = "Weight of the contrastive loss (overrides the strategy's)." };
        var lambdaLm = new Option<double?>("--lambda-lm") { Description = "Weight of the LM loss (overrides the strategy's)." };
        var lambdaPref = new Option<double?>("--lambda-pref") { Description = "Weight of the preference loss (overrides the strategy's)." };
        var lambdaKl = new Option<double?>("--lambda-kl") { Description = "Weight of the GRL consistency loss (overrides the strategy's)." };
        var generationPrompt = new Option<string?>("--generation-prompt") { Description = "Prompt a candidate is generated after; {query} and {instruction} placeholders (default \"{instruction}\\nQuery: {query}\\nPassage: \")." };
        var attention = new Option<string?>("--attention") { Description = "Embedding attention: bidirectional | causal (default: the model's). Generation terms are always causal." };
        var pooling = new Option<string?>("--pooling") { Description = "mean | weighted-mean | last-token | first-token (default: the model's)." };
        var maxLength = CommonOptions.NullableInt("--max-length", "Max tokens per embedded text (default: the model's).");
        var maxGenerationLength = new Option<int?>("--max-generation-length") { Description = "Max tokens of prompt + candidate (default: no cap)." };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Write a checkpoint every N steps (0 = only at the end).", DefaultValueFactory = _ => 50 };
        var checkpointDir = new Option<string?>("--checkpoint-dir") { Description = "Checkpoint folder (default <output>/checkpoints)." };
        var keepCheckpoints = new Option<int>("--keep-checkpoints") { Description = "Newest checkpoints kept.", DefaultValueFactory = _ => 2 };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest checkpoint (same command otherwise)." };
        var exportOnnx = new Option<string?>("--export-onnx") { Description = "After training, also export the tuned model to <output>/onnx for ONNX Runtime: float32, int8 or int4 (see `ullme export-onnx`)." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a non-empty output folder and delete earlier checkpoints." };
        var seed = new Option<int>("--seed") { Description = "Seed for data order, adapter init and dropout.", DefaultValueFactory = _ => 42 };
        var evalSts = new Option<string?>("--eval-sts") { Description = "STS file (STS-B sts-dev.csv, or a table with sentence1, sentence2, score): print Spearman before/after training." };
        var evalEvery = new Option<int>("--eval-every") { Description = "Score the dev metric every N steps and after the last (--eval-task, else --eval-sts); the scores go to losses.csv/png.", DefaultValueFactory = _ => 0 };
        var evalTask = new Option<string?>("--eval-task") { Description = "Dev metric for --eval-every: a task of `ullme eval` (e.g. STSBenchmark, Banking77Classification) or type:path; its main score." };
        var evalDataDir = new Option<string?>("--eval-data-dir") { Description = "Folder holding --eval-task's data, as `ullme eval --data-dir` (default: the current folder)." };
        var evalSplit = new Option<string?>("--eval-split") { Description = "The split of --eval-task scored (default: validation or dev when the task has one, else its first)." };
        var evalLimit = new Option<int?>("--eval-limit") { Description = "At most N items per split of --eval-task (a quicker dev score)." };
        var keepBest = new Option<bool>("--keep-best") { Description = "With --eval-every: write the weights of the best-scoring evaluation instead of the last step's." };
        var noPlot = new Option<bool>("--no-plot") { Description = "Do not write losses.png." };
        var allowNonFinite = new Option<bool>("--allow-non-finite-weights") { Description = "Load weights holding NaN/Inf (refused by default) with a warning per tensor; steps whose loss is NaN are skipped." };
        var dtype = CommonOptions.DType();
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();

        var command = new Command("train", "Fine-tune an embedding model (contrastive, contrastive-lm, dpo, grl, or LLM2Vec's mntp and simcse on plain text) and write the tuned model.")
        {
            model, from, data, strategy, output, exportOnnx, steps, epochs, batchSize, gradAccum, sharedNegatives, noShuffle, gradCache, generationChunk, gradientCheckpointing, full,
            loraRank, loraAlpha, loraDropout, loraTargets, lr, warmup, decay, weightDecay, maxGradNorm, temperature, symmetric, maskFalseNegatives, maskRatio, maskToken, attentionDropout, guideModel, matryoshkaDims, matryoshkaWeights, beta, preferenceLoss,
            referenceFree, generationTemperature, lambdaCl, lambdaLm, lambdaPref, lambdaKl, generationPrompt, attention, pooling, maxLength,
            maxGenerationLength, checkpointEvery, checkpointDir, keepCheckpoints, resume, overwrite, seed, evalSts, evalEvery, evalTask, evalDataDir, evalSplit, evalLimit, keepBest, noPlot, dtype, device, threads, allowNonFinite,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            if (parse.GetValue(steps) is not null && parse.GetValue(epochs) is not null)
                throw new UllmeException("--steps and --epochs are mutually exclusive: give one of them.");
            Positive(parse.GetValue(steps), "--steps");
            Positive(parse.GetValue(epochs), "--epochs");
            Positive(parse.GetValue(batchSize), "--batch-size");
            Positive(parse.GetValue(gradAccum), "--grad-accum");
            Positive(parse.GetValue(gradCache), "--grad-cache-chunk");
            Positive(parse.GetValue(generationChunk), "--generation-chunk");
            Positive(parse.GetValue(maxLength), "--max-length");
            Positive(parse.GetValue(keepCheckpoints), "--keep-checkpoints");
            if (parse.GetValue(evalEvery) < 0) throw new UllmeException($"--eval-every must be 0 or more, got {parse.GetValue(evalEvery)}.");
            if (parse.GetValue(evalEvery) > 0 && parse.GetValue(evalTask) is null && parse.GetValue(evalSts) is null)
                throw new UllmeException("--eval-every needs a dev metric: --eval-task <task> or --eval-sts <file>.");
            if ((parse.GetValue(evalTask) is not null || parse.GetValue(evalDataDir) is not null || parse.GetValue(evalLimit) is not null || parse.GetValue(evalSplit) is not null) && parse.GetValue(evalEvery) == 0)
                throw new UllmeException("--eval-task, --eval-data-dir, --eval-split and --eval-limit score during training; give --eval-every N too.");
            if ((parse.GetValue(evalDataDir) is not null || parse.GetValue(evalLimit) is not null || parse.GetValue(evalSplit) is not null) && parse.GetValue(evalTask) is null)
                throw new UllmeException("--eval-data-dir, --eval-split and --eval-limit belong to --eval-task (the --eval-sts file is scored whole).");
            string strategyName = parse.GetValue(strategy)!.Trim().ToLowerInvariant();
            if (parse.GetResult(maskRatio) is { Implicit: false } && strategyName != "mntp")
                throw new UllmeException("--mask-ratio applies to --strategy mntp only.");
            if (parse.GetValue(keepBest) && parse.GetValue(evalEvery) == 0)
                throw new UllmeException("--keep-best chooses among the evaluations of --eval-every; give --eval-every N too.");
            Positive(parse.GetValue(evalLimit), "--eval-limit");
            if (parse.GetValue(checkpointEvery) < 0) throw new UllmeException($"--checkpoint-every must be 0 or more, got {parse.GetValue(checkpointEvery)}.");
            bool isFull = parse.GetValue(full);
            if (isFull && (parse.GetValue(loraRank) is not null || parse.GetValue(loraAlpha) is not null || parse.GetValue(loraDropout) is not null || parse.GetValue(loraTargets) is not null))
                throw new UllmeException("--full trains every weight; it cannot be combined with --lora-rank/--lora-alpha/--lora-dropout/--lora-targets.");
            Positive(parse.GetValue(loraRank), "--lora-rank");
            string? fromFolder = parse.GetValue(from);
            if (fromFolder is not null && parse.GetResult(model) is { Implicit: false })
                throw new UllmeException("--from and --model both name the model to start from; give one of them.");
            if (fromFolder is not null && !Directory.Exists(fromFolder))
                throw new UllmeException($"--from '{fromFolder}' does not exist.");
            if (fromFolder is not null && !File.Exists(Path.Combine(fromFolder, RunFolders.SummaryFile)))
                throw new UllmeException($"--from '{fromFolder}' is not the output folder of `ullme train` (it has no {RunFolders.SummaryFile}); give it as --model to start from any model folder.");

            var settings = new TrainSettings
            {
                Model = fromFolder ?? parse.GetValue(model)!,
                From = fromFolder,
                Data = parse.GetValue(data)!,
                Strategy = parse.GetValue(strategy)!,
                Output = parse.GetValue(output)!,
                ExportOnnx = parse.GetValue(exportOnnx) is { } q ? Ullme.MLNet.Onnx.OnnxNames.Quantize.Parse(q, "OnnxExportOptions.Quantize") : null,
                CheckpointDir = parse.GetValue(checkpointDir),
                Resume = parse.GetValue(resume),
                Overwrite = parse.GetValue(overwrite),
                EvalSts = parse.GetValue(evalSts),
                EvalTask = parse.GetValue(evalTask),
                EvalDataDir = parse.GetValue(evalDataDir),
                EvalLimit = parse.GetValue(evalLimit),
                EvalSplit = parse.GetValue(evalSplit),
                GuideModel = parse.GetValue(guideModel),
                Plot = !parse.GetValue(noPlot),
                LoadOptions = CommonOptions.LoadOptions(parse.GetValue(dtype)!, parse.GetValue(device)!) with { AllowNonFiniteWeights = parse.GetValue(allowNonFinite) },
                Pooling = CommonOptions.Pooling(parse.GetValue(pooling)),
                Attention = CommonOptions.Attention(parse.GetValue(attention)),
                MaxLength = parse.GetValue(maxLength),
                Lambdas = (parse.GetValue(lambdaCl), parse.GetValue(lambdaLm), parse.GetValue(lambdaPref), parse.GetValue(lambdaKl)),
                Options = new FineTuneOptions
                {
                    Temperature = parse.GetValue(temperature),
                    SymmetricContrastive = parse.GetValue(symmetric),
                    MaskFalseNegatives = parse.GetValue(maskFalseNegatives),
                    MaskRatio = parse.GetValue(maskRatio),
                    MaskToken = parse.GetValue(maskToken),
                    AttentionDropout = parse.GetValue(attentionDropout),
                    MatryoshkaDimensions = ParseList(parse.GetValue(matryoshkaDims), "--matryoshka-dims", s => int.Parse(s, CultureInfo.InvariantCulture)),
                    MatryoshkaWeights = ParseList(parse.GetValue(matryoshkaWeights), "--matryoshka-weights", s => double.Parse(s, CultureInfo.InvariantCulture)),
                    Beta = parse.GetValue(beta),
                    PreferenceLoss = ParsePreferenceLoss(parse.GetValue(preferenceLoss)!),
                    ReferenceFree = parse.GetValue(referenceFree),
                    GenerationTemperature = parse.GetValue(generationTemperature),
                    GenerationPrompt = parse.GetValue(generationPrompt) ?? new FineTuneOptions().GenerationPrompt,
                    MaxGenerationLength = parse.GetValue(maxGenerationLength),
                    BatchSize = parse.GetValue(batchSize),
                    Epochs = parse.GetValue(epochs) ?? 1,
                    MaxSteps = parse.GetValue(steps),
                    AccumulationSteps = parse.GetValue(gradAccum),
                    ShareNegativesAcrossAccumulation = parse.GetValue(sharedNegatives),
                    Shuffle = !parse.GetValue(noShuffle),
                    Optimizer = new AdamWSettings { LearningRate = parse.GetValue(lr), WeightDecay = parse.GetValue(weightDecay) },
                    WarmupSteps = parse.GetValue(warmup),
                    Decay = ParseDecay(parse.GetValue(decay)!),
                    MaxGradientNorm = parse.GetValue(maxGradNorm),
                    Lora = isFull ? null : LoraFrom(parse.GetValue(loraRank), parse.GetValue(loraAlpha), parse.GetValue(loraDropout), parse.GetValue(loraTargets)),
                    GradCacheChunkSize = parse.GetValue(gradCache),
                    GenerationChunkSize = parse.GetValue(generationChunk),
                    GradientCheckpointing = parse.GetValue(gradientCheckpointing),
                    Seed = parse.GetValue(seed),
                    CheckpointEvery = parse.GetValue(checkpointEvery),
                    KeepCheckpoints = parse.GetValue(keepCheckpoints),
                    Resume = parse.GetValue(resume),
                    EvaluateEvery = parse.GetValue(evalEvery),
                    KeepBest = parse.GetValue(keepBest),
                },
            };
            // A training run owns its cores: libgomp's spinning barrier wait (UllmeRuntime.UseSpinningWait) unless the
            // environment chose a policy; must come before libtorch loads.
            UllmeRuntime.UseSpinningWait();
            CommonOptions.ApplyThreads(parse.GetValue(threads));
            return Task.FromResult(Run(settings, cancellationToken));
        });
        return command;
    }

    /// <summary>Everything parsed from the command line.</summary>
    private sealed record TrainSettings
    {
        public required string Model { get; init; }
        public string? From { get; init; }
        public required string Data { get; init; }
        public required string Strategy { get; init; }
        public required string Output { get; init; }
        public string? CheckpointDir { get; init; }
        public bool Resume { get; init; }
        public Ullme.MLNet.Onnx.OnnxQuantization? ExportOnnx { get; init; }
        public bool Overwrite { get; init; }
        public string? EvalSts { get; init; }
        public string? EvalTask { get; init; }
        public string? EvalDataDir { get; init; }
        public int? EvalLimit { get; init; }
        public string? EvalSplit { get; init; }
        public string? GuideModel { get; init; }
        public bool Plot { get; init; }
        public required ModelLoadOptions LoadOptions { get; init; }
        public PoolingMode? Pooling { get; init; }
        public AttentionMode? Attention { get; init; }
        public int? MaxLength { get; init; }
        public (double? Cl, double? Lm, double? Pref, double? Kl) Lambdas { get; init; }
        public required FineTuneOptions Options { get; init; }
    }

    /// <summary>A comma-separated list flag; a value that does not parse is one error naming the flag.</summary>
    private static IReadOnlyList<T>? ParseList<T>(string? text, string flag, Func<string, T> parse)
    {
        if (text is null) return null;
        var items = text.Split(',', StringSplitOptions.TrimEntries);
        var result = new List<T>(items.Length);
        foreach (string item in items)
        {
            try { result.Add(parse(item)); }
            catch (Exception e) when (e is FormatException or OverflowException)
            {
                throw new UllmeException($"{flag}: '{item}' is not a number (give a comma-separated list, e.g. 64,32,16).");
            }
        }
        return result;
    }

    private static int Run(TrainSettings s, CancellationToken cancellationToken)
    {
        var err = CliConsole.Err;
        string? loadStart = ProcessStats.LoadAverage();
        // Read and check all inputs and folders before the (slow) model load.
        bool plainText = IsPlainTextStrategy(s.Strategy);
        IReadOnlyList<TrainingExample> examples;
        try
        {
            examples = plainText ? TrainingData.FromTexts(TrainingData.LoadTexts(s.Data)) : TrainingData.LoadJsonl(s.Data);
        }
        catch (UllmeException e) when (!plainText && e.Message.Contains("not valid JSON", StringComparison.Ordinal))
        {
            throw new UllmeException(e.Message + " Plain text (one text a line) trains with --strategy mntp or simcse.", e);
        }
        var sts = s.EvalSts is null ? null : ReadSts(s.EvalSts);
        ISweepMetric? evaluator = s.Options.EvaluateEvery == 0 ? null
            : s.EvalTask is not null ? new TaskMetric(Ullme.MLNet.Evaluation.BuiltInTasks.Create(s.EvalTask, s.EvalDataDir ?? "."), s.EvalSplit, s.EvalLimit)
            : new StsSpearmanMetric(sts!);
        var folders = RunFolders.Prepare(s.Output, s.CheckpointDir, s.Resume, s.Overwrite);

        using var model = CliConsole.LoadModel(s.Model, s.LoadOptions);
        using var guide = s.GuideModel is null ? null : CliConsole.LoadModel(s.GuideModel, new ModelLoadOptions { Threads = s.LoadOptions.Threads });
        var strategy = ResolveStrategy(s.Strategy, model);
        if (strategy == TrainingStrategy.Mntp && (s.Lambdas.Cl ?? s.Lambdas.Lm ?? s.Lambdas.Pref ?? s.Lambdas.Kl) is not null)
            throw new UllmeException("--lambda-cl/--lambda-lm/--lambda-pref/--lambda-kl do not apply to --strategy mntp (masked next-token prediction is its own objective).");
        var preset = LossWeights.For(strategy);
        var weights = new LossWeights(s.Lambdas.Cl ?? preset.Contrastive, s.Lambdas.Lm ?? preset.LanguageModel,
            s.Lambdas.Pref ?? preset.Preference, s.Lambdas.Kl ?? preset.Consistency);
        var defaults = model.Defaults;
        var options = s.Options with
        {
            Strategy = strategy,
            Weights = weights == preset ? null : weights,
            Pooling = s.Pooling ?? defaults.Pooling,
            // LLM2Vec's unsupervised stages make the decoder bidirectional unless told otherwise.
            EmbeddingAttention = s.Attention ?? (plainText ? AttentionMode.Bidirectional : defaults.Attention),
            MaxLength = s.MaxLength ?? defaults.MaxLength,
            CheckpointDirectory = folders.Checkpoints,
            GuideModel = guide,
            Evaluator = evaluator,
        };
        var tuner = new UllmeFineTuner(model, options);    // validates every option against the model
        var embedding = new EmbeddingOptions { Pooling = options.Pooling, Attention = options.EmbeddingAttention, MaxLength = options.MaxLength, BatchSize = 64 };
        CliConsole.Note($"{model.ModelId}: {strategy} ({Describe(strategy, weights, options, model)}), {(options.Lora is null ? "full fine-tuning" : $"LoRA r {options.Lora.Rank} α {options.Lora.Alpha}")}, " +
            $"{examples.Count} examples, batch {options.BatchSize}, lr {options.Optimizer.LearningRate:G3}, {Pooler.ToName(options.Pooling)} pooling, " +
            $"{OptionNames.Attention.ToName(options.EmbeddingAttention)} attention, max length {options.MaxLength}.");

        double? stsBefore = sts is null ? null : Spearman(model, sts, embedding, "STS before training", cancellationToken);
        if (stsBefore is double b) CliConsole.Note($"STS Spearman before training: {b:F4} ({Path.GetFileName(s.EvalSts)})");

        var latest = s.Resume ? TrainingCheckpoint.FindLatest(folders.Checkpoints, WarningLogger.Instance) : null;
        var resumeState = latest is null ? null : TrainingCheckpoint.ReadState(latest);
        if (s.Resume && latest is null) CliConsole.Warn($"--resume: no checkpoint in '{folders.Checkpoints}'; starting from the beginning.");
        if (resumeState is not null) CliConsole.Note($"Resuming from step {resumeState.Step} ({latest}).");

        FineTuneResult result;
        using (var log = LossLog.Open(folders.Checkpoints, weights, resumeState?.Step, strategy == TrainingStrategy.Mntp, evaluator?.Name))
        {
            long seenBefore = resumeState is null ? 0 : (long)resumeState.Epoch * examples.Count + resumeState.PositionInEpoch;
            try
            {
                result = TrainWithProgress(tuner, examples, log, seenBefore, resumeState?.Step ?? 0, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                throw Interrupted(folders);
            }
            if (result.History.Count > 0 && result.History.All(h => !h.Applied))
                throw new UllmeException($"Every training step was skipped ({result.History[0].Message}); no model was written. Check the data, lower --lr, or add --max-grad-norm.");
            if (result.BestStep is int bestStep && evaluator is not null)
                CliConsole.Note(string.Create(CultureInfo.InvariantCulture, $"best {evaluator.Name} {result.BestEvaluation:F4} at step {bestStep}") +
                    (result.RestoredBest ? "; its weights are the ones written (--keep-best)." : "."));
            if (result.StepsSkipped > 0)
                CliConsole.Warn($"{result.StepsSkipped} of {result.History.Count} steps were skipped for NaN/∞ (weights left unchanged for those steps); see losses.csv (applied = 0).");

            double? stsAfter = sts is null ? null : Spearman(model, sts, embedding, "STS after training", cancellationToken);

            string staging = folders.CreateStaging();
            try
            {
                model.SaveFolder(staging, new EmbeddingDefaults(options.Pooling, options.EmbeddingAttention, defaults.Normalize, options.MaxLength));
                File.Copy(log.Path, Path.Combine(staging, LossLog.FileName));
                if (s.Plot && log.Rows.Count > 0)
                    LossPlot.Save(Path.Combine(staging, LossPlot.FileName), log.Rows, $"{model.ModelId}: {strategy}", evaluator?.Name);
                var summary = Summary(s, model, examples.Count, options, result, log, stsBefore, stsAfter, folders, loadStart);
                File.WriteAllText(Path.Combine(staging, RunFolders.SummaryFile), summary.ToJsonString(OptionsJson));
                folders.Publish(staging);
            }
            catch
            {
                RunFolders.Discard(staging);
                throw;
            }

            var last = log.Rows.LastOrDefault();
            err.MarkupLine($"[green]done[/]: {result.StepsDone} steps" + (result.ResumedFromStep is int r ? $" (resumed from {r})" : "") +
                $", final loss {Markup.Escape(result.FinalLosses?.ToString() ?? (last is null ? "-" : last.Total.ToString("F4", CultureInfo.InvariantCulture)))}" +
                $", {result.ExamplesPerSecond:F1} samples/s" + (ProcessStats.PeakRssMiB() is double peak ? $", peak RSS {peak:F0} MiB" : "") + ".");
            if (stsBefore is double sb && stsAfter is double sa)
                Console.WriteLine($"STS Spearman ({Path.GetFileName(s.EvalSts)}): before {sb:F4}, after {sa:F4} ({sa - sb:+0.0000;-0.0000})");
            CliConsole.Note($"wrote {folders.Output}");
            if (s.ExportOnnx is { } quantize)
            {
                // From the folder just written (merged weights, as every later user loads them).
                using var saved = UllmeModel.Load(folders.Output);
                var exported = Ullme.MLNet.Onnx.UllmeOnnx.Export(saved, Path.Combine(folders.Output, "onnx"),
                    new Ullme.MLNet.Onnx.OnnxExportOptions { Quantize = quantize });
                CliConsole.Note($"wrote {exported.ModelFile} ({Ullme.MLNet.Onnx.OnnxNames.Quantize.ToName(quantize)}); run it with --model {Path.Combine(folders.Output, "onnx")}");
            }
        }
        return 0;
    }

    /// <summary>
    /// The error of a run stopped by SIGINT/SIGTERM: the trainer wrote a checkpoint at the step boundary it stopped
    /// at; the message names it and gives the exact command that continues the run.
    /// </summary>
    private static CommandInterruptedException Interrupted(RunFolders folders)
    {
        string? latest = TrainingCheckpoint.FindLatest(folders.Checkpoints);
        string where = latest is null
            ? $"no checkpoint was written yet (checkpoint folder '{folders.Checkpoints}')"
            : $"checkpoint at step {TrainingCheckpoint.ReadState(latest).Step} written to '{latest}'";
        return new CommandInterruptedException($"training stopped; {where}. To resume, run:{Environment.NewLine}  {ResumeCommand(CliRunner.Args)}");
    }

    /// <summary>The command line that continues this run: the same program and arguments, plus --resume.</summary>
    internal static string ResumeCommand(IReadOnlyList<string> args)
    {
        var parts = new List<string>(CommandPrefix());
        parts.AddRange(args);
        if (!args.Contains("--resume")) parts.Add("--resume");
        return string.Join(' ', parts.Select(ShellQuote));
    }

    /// <summary>How this process was started: <c>dotnet path/ullme.dll</c>, the apphost's path, or <c>ullme</c> (a tool on PATH).</summary>
    private static IEnumerable<string> CommandPrefix()
    {
        string? process = Environment.ProcessPath;
        string name = Path.GetFileNameWithoutExtension(process ?? "");
        if (name.Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            return [process!, typeof(TrainCommand).Assembly.Location];
        if (name.Equals("ullme", StringComparison.OrdinalIgnoreCase))
        {
            string dir = Path.GetDirectoryName(process!)!;
            bool onPath = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
                .Any(d => d.Length > 0 && Ullme.MLNet.IO.PathGuard.Same(d, dir));
            return [onPath ? "ullme" : process!];
        }
        return ["ullme"];
    }

    /// <summary>Quotes an argument for a POSIX shell when it holds anything but safe characters.</summary>
    internal static string ShellQuote(string arg) =>
        arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=@%+,".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";

    /// <summary>Runs training with a progress bar (interactive) or a line every ~5% of the steps (redirected).</summary>
    private static FineTuneResult TrainWithProgress(UllmeFineTuner tuner, IReadOnlyList<TrainingExample> data, LossLog log, long seenBefore,
        int resumedStep, CancellationToken cancellationToken)
    {
        var err = CliConsole.Err;
        long prevSeen = seenBefore;
        double prevElapsed = 0;
        double offset = log.ElapsedOffset;
        LossRow Record(TrainingProgress p)
        {
            double seconds = p.Elapsed.TotalSeconds;
            double rate = (p.ExamplesSeen - prevSeen) / Math.Max(1e-9, seconds - prevElapsed);
            prevSeen = p.ExamplesSeen;
            prevElapsed = seconds;
            var row = LossLog.FromProgress(p, rate, offset + seconds);
            log.Append(row);
            FaultInjection.Reach("step");
            if (!p.Applied) Console.Error.WriteLine($"warning: step {p.Step} skipped: {p.Message ?? "non-finite loss"}");
            return row;
        }

        if (!err.Profile.Capabilities.Interactive)
        {
            return tuner.Train(data, new SyncProgress<TrainingProgress>(p =>
            {
                var row = Record(p);
                int every = Math.Max(1, p.TotalSteps / 20);
                if (p.Step == resumedStep + 1 || p.Step % every == 0 || p.Step == p.TotalSteps || p.Evaluation is not null)
                    Console.Error.WriteLine($"step {p.Step}/{p.TotalSteps} epoch {p.Epoch} lr {p.LearningRate:G3} {p.Losses} ({row.SamplesPerSecond:F1} samples/s)"
                        + (p.Evaluation is double score ? string.Create(CultureInfo.InvariantCulture, $", {log.EvaluationColumn} {score:F4}") : ""));
            }), cancellationToken);
        }
        FineTuneResult result = null!;
        string lastScore = "";
        err.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask("preparing…", maxValue: 1);
                result = tuner.Train(data, new SyncProgress<TrainingProgress>(p =>
                {
                    var row = Record(p);
                    bar.MaxValue = p.TotalSteps;
                    bar.Value = p.Step;
                    if (p.Evaluation is double score) lastScore = string.Create(CultureInfo.InvariantCulture, $" · {log.EvaluationColumn} {score:F4}");
                    bar.Description = Markup.Escape($"step {p.Step}/{p.TotalSteps} · {p.Losses} · {row.SamplesPerSecond:F1}/s{lastScore}");
                }), cancellationToken);
                bar.Value = bar.MaxValue;
            });
        return result;
    }

    /// <summary>Cosine Spearman of an STS file with the run's embedding settings.</summary>
    private static double Spearman(UllmeModel model, List<StsPair> pairs, EmbeddingOptions options, string what, CancellationToken cancellationToken)
    {
        var texts = pairs.Select(p => p.Text1).Concat(pairs.Select(p => p.Text2)).ToList();
        var engine = new EmbeddingEngine(model);
        var vectors = CliConsole.WithProgress(what, texts.Count, progress => engine.Embed(texts, options, progress, cancellationToken));
        var cos = PairedScores.Cosine(vectors.Take(pairs.Count).ToList(), vectors.Skip(pairs.Count).ToList());
        return Correlation.Spearman(pairs.Select(p => p.Score).ToArray(), cos);
    }

    /// <summary>STS-B files (tab-separated, score in field 5, no header) or a table with sentence1/sentence2/score.</summary>
    internal static List<StsPair> ReadSts(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"--eval-sts file '{path}' does not exist.");
        string? first = File.ReadLines(path).FirstOrDefault(l => l.Trim().Length > 0);
        if (first is not null && first.Split('\t').Length >= 7) return StsBenchmarkFormat.Read(path);
        return TableFormat.ReadSts(path);
    }

    private static JsonObject Summary(TrainSettings s, UllmeModel model, int exampleCount, FineTuneOptions options, FineTuneResult result, LossLog log,
        double? stsBefore, double? stsAfter, RunFolders folders, string? loadStart)
    {
        var w = options.EffectiveWeights;
        var last = log.Rows.LastOrDefault();
        var json = new JsonObject
        {
            ["model"] = s.Model,
            ["from"] = s.From is null ? null : Path.GetFullPath(s.From),
            ["attention_dropout"] = model.Backbone.SupportsAttentionDropout ? options.AttentionDropout ?? (options.Strategy == TrainingStrategy.SimCse ? 0.3 : model.Config.AttentionDropout ?? 0) : null,
            ["model_id"] = model.ModelId,
            ["data"] = Path.GetFullPath(s.Data),
            ["examples"] = exampleCount,
            ["strategy"] = options.Strategy.ToString(),
            ["loss_weights"] = new JsonObject { ["contrastive"] = w.Contrastive, ["lm"] = w.LanguageModel, ["preference"] = w.Preference, ["kl"] = w.Consistency },
            ["steps"] = result.StepsDone,
            ["resumed_from_step"] = result.ResumedFromStep,
            ["steps_skipped"] = log.Rows.Count(r => !r.Applied),
            ["final_losses"] = last is null ? null : new JsonObject(LastLosses(last)),
            ["samples_per_second"] = Math.Round(result.ExamplesPerSecond, 3),
            ["train_seconds"] = Math.Round(result.Elapsed.TotalSeconds, 3),
            ["reference_cache_seconds"] = Math.Round(result.ReferenceCacheTime.TotalSeconds, 3),
            ["peak_rss_mib"] = ProcessStats.PeakRssMiB() is double p ? Math.Round(p, 1) : null,
            ["threads"] = TorchSharp.torch.get_num_threads(),
            ["omp_wait_policy"] = UllmeRuntime.OmpWaitPolicy ?? (UllmeRuntime.GompSpinCount is { } spin ? $"GOMP_SPINCOUNT={spin}" : "libgomp default (spin, then sleep)"),
            ["load_average_start"] = loadStart,
            ["load_average_end"] = ProcessStats.LoadAverage(),
            ["sts"] = s.EvalSts is null ? null : new JsonObject
            {
                ["file"] = Path.GetFullPath(s.EvalSts),
                ["spearman_before"] = stsBefore is double b ? Math.Round(b, 6) : null,
                ["spearman_after"] = stsAfter is double a ? Math.Round(a, 6) : null,
            },
            ["evaluation"] = options.Evaluator is not { } metric ? null : new JsonObject
            {
                ["metric"] = metric.Name,
                ["every"] = options.EvaluateEvery,
                ["best_step"] = result.BestStep,
                ["best"] = result.BestEvaluation is double be ? Math.Round(be, 6) : null,
                ["keep_best"] = options.KeepBest,
                ["restored_best"] = result.RestoredBest,
            },
            ["checkpoint"] = result.LastCheckpoint is null ? null
                : folders.CheckpointsInsideOutput ? Path.Combine(RunFolders.CheckpointsFolder, Path.GetFileName(result.LastCheckpoint)) : result.LastCheckpoint,
            ["dtype"] = model.ScalarType.ToString(),
            ["device"] = model.LoadOptions.Device,
            ["created_utc"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
            ["options"] = JsonSerializer.SerializeToNode(options with { CheckpointDirectory = null }, OptionsJson),
        };
        return json;
    }

    private static IEnumerable<KeyValuePair<string, JsonNode?>> LastLosses(LossRow r)
    {
        yield return new("total", r.Total);
        if (r.Contrastive is double c) yield return new("contrastive", c);
        if (r.LanguageModel is double l) yield return new("lm", l);
        if (r.Preference is double p) yield return new("preference", p);
        if (r.Consistency is double k) yield return new("kl", k);
        if (r.MaskedNextToken is double m) yield return new("mntp", m);
    }

    private static string Describe(TrainingStrategy strategy, LossWeights w, FineTuneOptions o, UllmeModel model) => strategy == TrainingStrategy.Mntp
        ? string.Create(CultureInfo.InvariantCulture, $"masked next-token prediction, mask ratio {o.MaskRatio}, mask token {MntpStep.ResolveMaskToken(model.Tokenizer, o.MaskToken, model.Config.VocabSize)}")
        : string.Create(CultureInfo.InvariantCulture, $"λ_cl {w.Contrastive}, λ_lm {w.LanguageModel}, λ_pref {w.Preference}, λ_kl {w.Consistency}")
            + (strategy == TrainingStrategy.SimCse
                ? model.Backbone.SupportsAttentionDropout
                    ? string.Create(CultureInfo.InvariantCulture, $"; each text twice, dropout as the augmentation (attention dropout {o.AttentionDropout ?? 0.3})")
                    : "; each text twice, dropout as the augmentation (the config's dropouts)"
                : "");

    /// <summary>Whether the strategy named on the command line trains on plain text.</summary>
    private static bool IsPlainTextStrategy(string value) => value.Trim().ToLowerInvariant() is "mntp" or "simcse";

    private static TrainingStrategy ResolveStrategy(string value, UllmeModel model) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => model.Backbone.HasLanguageModelHead ? TrainingStrategy.Grl : TrainingStrategy.Contrastive,
        "contrastive" or "cl" => TrainingStrategy.Contrastive,
        "contrastive-lm" or "contrastivelm" or "cl-lm" => TrainingStrategy.ContrastiveLm,
        "dpo" => TrainingStrategy.Dpo,
        "grl" => TrainingStrategy.Grl,
        "mntp" => TrainingStrategy.Mntp,
        "simcse" => TrainingStrategy.SimCse,
        _ => throw new UllmeException($"--strategy '{value}' is not one of contrastive, contrastive-lm, dpo, grl, mntp, simcse, auto."),
    };

    private static PreferenceLossKind ParsePreferenceLoss(string value) => value.Trim().ToLowerInvariant() switch
    {
        "sigmoid" or "dpo" => PreferenceLossKind.Sigmoid,
        "ipo" => PreferenceLossKind.Ipo,
        "hinge" => PreferenceLossKind.Hinge,
        "kto-pair" or "kto" => PreferenceLossKind.KtoPair,
        _ => throw new UllmeException($"--preference-loss '{value}' is not one of sigmoid, ipo, hinge, kto-pair."),
    };

    private static DecayKind ParseDecay(string value) => value.Trim().ToLowerInvariant() switch
    {
        "cosine" => DecayKind.Cosine,
        "linear" => DecayKind.Linear,
        "constant" => DecayKind.Constant,
        _ => throw new UllmeException($"--decay '{value}' is not one of cosine, linear, constant."),
    };

    private static LoraOptions LoraFrom(int? rank, double? alpha, double? dropout, string? targets)
    {
        var d = new LoraOptions();
        int r = rank ?? d.Rank;
        return d with
        {
            Rank = r,
            Alpha = alpha ?? 2.0 * r,
            Dropout = dropout ?? d.Dropout,
            TargetModules = targets?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        };
    }

    private static void Positive(int? value, string name)
    {
        if (value is <= 0) throw new UllmeException($"{name} must be positive, got {value}.");
    }
}
