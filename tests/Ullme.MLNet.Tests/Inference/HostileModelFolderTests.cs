using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// Model folders from strangers (issue 14, point 4): each hostile folder is refused by <see cref="UllmeModel.Load"/>
/// with one <see cref="UllmeException"/> naming the file and the field, before anything large is allocated. Every
/// folder starts as a valid tiny Llama (the committed random fixture, 93 KB, plus a character-level tokenizer.json)
/// and has one thing broken. Managed allocations while refusing are bounded by the folder's size + 100 MB (the
/// process-level peak RSS is checked by <see cref="HostileConfig_InARealProcess_FailsFastWithOneLineAndSmallPeakRss"/>).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class HostileModelFolderTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const long Slack = 100L << 20;

    /// <summary>A valid tiny model folder (config.json, model.safetensors, tokenizer.json).</summary>
    private string ValidFolder(string name)
    {
        string folder = Path.Combine(_dir, name);
        Directory.CreateDirectory(folder);
        string fixture = DecoderTestSupport.FixtureFolder("llama");
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(folder, "config.json"));
        File.Copy(Path.Combine(fixture, "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1 };
        foreach (char c in " abcdefghijklmnopqrstuvwxyz") vocab[c.ToString()] = vocab.Count;
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = JsonSerializer.SerializeToNode(vocab), ["merges"] = new JsonArray(), ["unk_token"] = "<unk>" },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizer.ToJsonString());
        return folder;
    }

    /// <summary>The folder's config.json with <paramref name="edit"/> applied.</summary>
    private string WithConfig(string name, Action<JsonObject> edit)
    {
        string folder = ValidFolder(name);
        string path = Path.Combine(folder, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(config);
        File.WriteAllText(path, config.ToJsonString());
        return folder;
    }

    /// <summary>Loads the folder, expects one UllmeException, checks the managed allocation bound and returns the message.</summary>
    private static string Refused(string folder, ModelLoadOptions? options = null)
    {
        long size = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => new FileInfo(f)).Where(f => f.LinkTarget is null).Sum(f => f.Length);
        long before = GC.GetAllocatedBytesForCurrentThread();
        UllmeException? error = null;
        // A FIFO or /dev/zero must never hang the loader: fail the test instead of the run.
        var task = Task.Run(() =>
        {
            long start = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                using var model = UllmeModel.Load(folder, options);
            }
            catch (UllmeException e)
            {
                error = e;
            }
            return GC.GetAllocatedBytesForCurrentThread() - start;
        });
        Assert.True(task.Wait(TimeSpan.FromSeconds(60)), $"loading '{folder}' did not finish within 60 s");
        long allocated = task.Result;
        _ = before;
        Assert.NotNull(error);
        Assert.True(allocated < size + Slack, $"refusing '{folder}' allocated {allocated:N0} managed bytes (folder {size:N0} bytes)");
        Assert.DoesNotContain('\n', error!.Message);
        return error.Message;
    }

    [Fact]
    public void TheUnbrokenFolder_Loads()
    {
        using var model = UllmeModel.Load(ValidFolder("valid"));
        var e = new EmbeddingEngine(model).Embed(["a cab"])[0];
        Assert.All(e, v => Assert.True(float.IsFinite(v)));
    }

    // ---------- config.json: absurd, inconsistent or ill-typed ----------

    public static TheoryData<string, string, string> ConfigCases => new()
    {
        // case, JSON members spliced over the valid config, what the message must name
        { "layers 1e6", """{"num_hidden_layers": 1000000}""", "\"num_hidden_layers\" is 1,000,000, more than the 4,096 a real model has" },
        { "hidden 1e9", """{"hidden_size": 1000000000}""", "\"hidden_size\" is 1,000,000,000, more than the 131,072" },
        { "intermediate 1e9", """{"intermediate_size": 1000000000}""", "\"intermediate_size\" is 1,000,000,000, more than the 1,048,576" },
        { "vocab 1e12", """{"vocab_size": 1000000000000}""", "field \"vocab_size\" is 1000000000000, but it must be a 32-bit integer" },
        { "vocab 1e7 (within int)", """{"vocab_size": 100000000}""", "\"vocab_size\" is 100,000,000, more than the 16,777,216" },
        { "negative hidden", """{"hidden_size": -32}""", "\"hidden_size\" is missing or not positive (got -32)" },
        { "layers as text", """{"num_hidden_layers": "abc"}""", "field \"num_hidden_layers\" is \"abc\"" },
        { "architectures not a list", """{"architectures": 5}""", "field \"architectures\" is 5, but it must be a list of strings" },
        { "heads not dividing hidden", """{"num_attention_heads": 3, "num_key_value_heads": 1}""", "hidden_size (32) is not divisible by num_attention_heads (3)" },
        { "kv heads not dividing heads", """{"num_key_value_heads": 3}""", "num_attention_heads (4) must be a multiple of num_key_value_heads (3)" },
        { "kv heads above heads", """{"num_key_value_heads": 8}""", "\"num_key_value_heads\" is 8, more than num_attention_heads (4)" },
        { "negative rms eps", """{"rms_norm_eps": -1e-5}""", "\"rms_norm_eps\" is -1E-05; it must be a finite number greater than 0" },
        { "zero rms eps", """{"rms_norm_eps": 0}""", "\"rms_norm_eps\" is 0" },
        { "NaN rms eps", """{"rms_norm_eps": "NaN"}""", "\"rms_norm_eps\" is NaN" },
        { "zero rope theta", """{"rope_theta": 0}""", "\"rope_theta\" is 0" },
        { "negative rope theta", """{"rope_theta": -10000}""", "\"rope_theta\" is -10000" },
        { "rope factor 0", """{"rope_scaling": {"rope_type": "linear", "factor": 0}}""", "\"rope_scaling.factor\" is 0" },
        { "rope factor as text", """{"rope_scaling": {"rope_type": "linear", "factor": "x"}}""", "field \"rope_scaling.factor\" is \"x\", but it must be a number" },
        { "negative positions", """{"max_position_embeddings": -1}""", "\"max_position_embeddings\" is -1" },
        // Plausible sizes that disagree with the weights: refused from the headers, before the model is built.
        { "layers 3 vs 2 stored", """{"num_hidden_layers": 3}""", "\"num_hidden_layers\" is 3, but 'MODEL' holds 2 layers" },
        { "layers 4000 vs 2 stored", """{"num_hidden_layers": 4000}""", "\"num_hidden_layers\" is 4,000, but 'MODEL' holds 2 layers" },
        { "vocab 65536 vs 64 stored", """{"vocab_size": 65536}""", "tensor 'model.embed_tokens.weight' in 'MODEL' has shape [64, 32], but the config's vocab_size x hidden_size give [65536, 32]" },
        { "hidden 4096 vs 32 stored", """{"hidden_size": 4096}""", "the config's vocab_size x hidden_size give [64, 4096]" },
        { "intermediate 8192 vs 64 stored", """{"intermediate_size": 8192}""", "the config's intermediate_size x hidden_size give [8192, 32]" },
    };

    [Theory]
    [MemberData(nameof(ConfigCases))]
    public void HostileConfig_IsRefusedNamingFileAndField(string name, string members, string expected)
    {
        string folder = WithConfig(name.Replace(' ', '-'), c =>
        {
            foreach (var (k, v) in JsonNode.Parse(members)!.AsObject()) c[k] = v?.DeepClone();
        });
        string message = Refused(folder);
        Assert.Contains(Path.Combine(folder, "config.json"), message);
        Assert.Contains(expected.Replace("MODEL", Path.Combine(folder, "model.safetensors")), message);
    }

    [Theory]
    [InlineData("[1, 2]", "is not a JSON object")]
    [InlineData("{\"model_type\": ", "is not valid config JSON")]
    public void ConfigThatIsNotAnObject_IsRefused(string json, string expected)
    {
        string folder = ValidFolder("config-" + expected.Length);
        File.WriteAllText(Path.Combine(folder, "config.json"), json);
        string message = Refused(folder);
        Assert.Contains(Path.Combine(folder, "config.json"), message);
        Assert.Contains(expected, message);
    }

    [Fact]
    public void ConfigNestedTooDeep_IsRefused()
    {
        string folder = ValidFolder("deep-config");
        File.WriteAllText(Path.Combine(folder, "config.json"), "{\"x\":" + new string('[', 10_000) + new string(']', 10_000) + "}");
        string message = Refused(folder);
        Assert.Contains(Path.Combine(folder, "config.json"), message);
        Assert.Contains("depth", message);
    }

    [Fact]
    public void Plan_EqualsTheModulesStateDict_ForEveryArchitecture()
    {
        var configs = DecoderTestSupport.FixtureNames.Select(DecoderTestSupport.FixtureConfig).ToList();
        configs.Add(ModelConfig.Parse("""{"model_type":"bert","vocab_size":50,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"max_position_embeddings":20,"type_vocab_size":3}"""));
        configs.Add(ModelConfig.Parse("""{"model_type":"llama","vocab_size":50,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"attention_bias":true,"mlp_bias":true,"tie_word_embeddings":true}"""));
        configs.Add(ModelConfig.Parse("""{"model_type":"qwen2","vocab_size":50,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2}"""));
        foreach (var config in configs)
        {
            using var module = BackboneFactory.CreateForLoading(config, ScalarType.Float32, CPU);
            var actual = module.state_dict().Select(kv => (kv.Key, Shape: string.Join("x", kv.Value.shape))).ToList();
            var plan = ModelPlan.For(config);
            var planned = plan.Tensors.Select(t => (t.Name, Shape: string.Join("x", t.Shape))).ToList();
            Assert.Equal(actual.OrderBy(a => a.Key, StringComparer.Ordinal), planned.OrderBy(p => p.Name, StringComparer.Ordinal));
            Assert.Equal(module.parameters().Sum(p => p.numel()) * 4, plan.ParameterBytes(ScalarType.Float32));
        }
    }

    [Fact]
    public void Memory_ALoadThatDoesNotFit_IsRefusedBeforeAllocating()
    {
        var config = DecoderTestSupport.FixtureConfig("llama");
        var plan = ModelPlan.For(config);
        long bytes = plan.LoadingBytes(ScalarType.Float32, 0);
        var e = Assert.Throws<UllmeException>(() => plan.CheckMemory(ScalarType.Float32, 0, bytes - 1, "MemAvailable in /proc/meminfo"));
        Assert.Contains(config.SourcePath!, e.Message);
        Assert.Contains("num_hidden_layers 2", e.Message);
        Assert.Contains("MemAvailable", e.Message);
        plan.CheckMemory(ScalarType.Float32, 0, bytes, "test"); // exactly enough: accepted
        // BERT is created in float32 and converted: loading as bfloat16 needs both copies.
        var bert = ModelPlan.For(ModelConfig.Parse("""{"model_type":"bert","vocab_size":50,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"max_position_embeddings":20}"""));
        Assert.Equal(bert.ParameterBytes(ScalarType.Float32) + bert.ParameterBytes(ScalarType.BFloat16) + 10, bert.LoadingBytes(ScalarType.BFloat16, 10));
        var (available, source) = ModelPlan.AvailableMemory();
        Assert.True(available > 0 && available <= GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, $"{available} from {source}");
    }

    // ---------- the settings files: wrong JSON types ----------

    public static TheoryData<string, string, string, string> SettingsCases => new()
    {
        // file, content, what the message must name (besides the file)
        { "sentence_bert_config.json", """{"max_seq_length":"abc"}""", "\"max_seq_length\" must be a positive whole number of tokens, not the string \"abc\"", "" },
        { "sentence_bert_config.json", """{"max_seq_length":1e12}""", "\"max_seq_length\" is 1e12, more tokens than a 32-bit count holds", "" },
        { "sentence_bert_config.json", """{"max_seq_length":-3}""", "\"max_seq_length\" must be a positive number of tokens, not -3", "" },
        { "sentence_bert_config.json", "[1]", "must hold a JSON object, not an array", "" },
        { "ullme.json", """{"pooling":5}""", "\"pooling\" must be a string, not the number 5", "" },
        { "ullme.json", """{"pooling":"banana"}""", "Unknown pooling 'banana'", "" },
        { "ullme.json", """{"attention":[]}""", "\"attention\" must be a string, not an array", "" },
        { "ullme.json", """{"normalize":"yes"}""", "\"normalize\" must be true or false, not the string \"yes\"", "" },
        { "ullme.json", """{"max_length":{}}""", "\"max_length\" must be a positive whole number of tokens, not an object", "" },
        { "ullme.json", "null", "holds JSON null", "" },
        { "modules.json", """[{"type":5}]""", "\"[0].type\" must be a string, not the number 5", "" },
        { "modules.json", """[7]""", "entry 0 must be a JSON object, not the number 7", "" },
        { "modules.json", """{"type":"x"}""", "must hold a JSON array of modules, not an object", "" },
        { "modules.json", """[{"type":"sentence_transformers.models.Pooling","path":"../../.."}]""", "lies outside the model folder", "" },
        { "modules.json", """[{"type":"sentence_transformers.models.Pooling","path":7}]""", "\"[0].path\" must be a string, not the number 7", "" },
        { "1_Pooling/config.json", """{"pooling_mode_cls_token":"yes"}""", "\"pooling_mode_cls_token\" must be true or false", "modules" },
        { "1_Pooling/config.json", """[]""", "must hold a JSON object, not an array", "modules" },
        { "tokenizer_config.json", """{"add_bos_token":5}""", "'add_bos_token' must be true, false or null", "" },
        { "tokenizer_config.json", """{"added_tokens_decoder":{"5":{"content":7}}}""", "added token 5 has no string \"content\"", "" },
        { "special_tokens_map.json", """{"bos_token":5}""", "'bos_token' must be a string or an object", "" },
        { "special_tokens_map.json", "{\"bos_token\":" + new string('[', 200) + new string(']', 200) + "}", "depth", "" },
    };

    [Theory]
    [MemberData(nameof(SettingsCases))]
    public void HostileSettingsFile_IsRefusedNamingFileAndField(string file, string content, string expected, string needs)
    {
        string folder = ValidFolder("settings-" + Math.Abs((file + content).GetHashCode()));
        if (needs == "modules")
            File.WriteAllText(Path.Combine(folder, "modules.json"), """[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]""");
        string path = Path.Combine(folder, file);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content);
        string message = Refused(folder);
        Assert.Contains(path, message);
        Assert.Contains(expected, message);
    }

    // ---------- files that are not regular files, too large, or links that do not resolve ----------

    public static TheoryData<string, string> SpecialFileCases => new()
    {
        // file, kind
        { "config.json", "dev-zero" }, { "tokenizer.json", "dev-zero" }, { "ullme.json", "dev-zero" },
        { "model.safetensors", "dev-zero" }, { "tokenizer_config.json", "dev-zero" },
        { "config.json", "fifo" }, { "tokenizer.json", "fifo" }, { "modules.json", "fifo" }, { "model.safetensors", "fifo" },
        { "config.json", "loop" }, { "tokenizer.json", "loop" }, { "sentence_bert_config.json", "loop" }, { "model.safetensors", "loop" },
        { "config.json", "dangling" }, { "special_tokens_map.json", "dangling" },
        { "config.json", "oversize" }, { "tokenizer.json", "oversize" }, { "1_Pooling/config.json", "oversize" },
        { "ullme.json", "directory" },
    };

    [Theory]
    [MemberData(nameof(SpecialFileCases))]
    public void SpecialFile_IsRefusedWithoutReadingIt(string file, string kind)
    {
        string folder = ValidFolder($"special-{kind}-{file.Replace('/', '-')}");
        if (file.StartsWith("1_Pooling", StringComparison.Ordinal))
            File.WriteAllText(Path.Combine(folder, "modules.json"), """[{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]""");
        string path = Path.Combine(folder, file);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.Delete(path);
        string expected;
        switch (kind)
        {
            case "dev-zero":
                File.CreateSymbolicLink(path, "/dev/zero");
                expected = "is not a regular file (it is '/dev/zero'";
                break;
            case "fifo":
                using (var p = Process.Start("mkfifo", [path])) p.WaitForExit();
                Assert.True(File.Exists(path), "mkfifo failed");
                expected = "is empty or is not a regular file (a device, pipe or socket)";
                break;
            case "loop":
                File.CreateSymbolicLink(path, path + ".other");
                File.CreateSymbolicLink(path + ".other", path);
                expected = "is a symbolic link that cannot be resolved";
                break;
            case "dangling":
                File.CreateSymbolicLink(path, Path.Combine(folder, "nothing-here"));
                expected = "which does not exist";
                break;
            case "oversize":
                // A sparse file: its length says 600 MB, the disk holds nothing, and it is never read.
                using (var s = new FileStream(path, FileMode.Create)) s.SetLength(600L << 20);
                expected = "bytes, more than the";
                break;
            case "directory":
                Directory.CreateDirectory(path);
                expected = "is a directory, not a file";
                break;
            default: throw new ArgumentException(kind);
        }
        string message = Refused(folder);
        Assert.Contains(path, message);
        Assert.Contains(expected, message);
    }

    // ---------- tokenizer.json garbage ----------

    [Theory]
    [InlineData("garbage")]
    [InlineData("deep")]
    [InlineData("model-not-object")]
    [InlineData("vocab-ids-not-numbers")]
    public void HostileTokenizerJson_IsRefused(string kind)
    {
        string folder = ValidFolder("tokenizer-" + kind);
        string path = Path.Combine(folder, "tokenizer.json");
        string expected;
        switch (kind)
        {
            case "garbage":
                var bytes = new byte[1 << 20];
                new Random(14).NextBytes(bytes);
                File.WriteAllBytes(path, bytes);
                expected = "is not valid JSON";
                break;
            case "deep":
                File.WriteAllText(path, "{\"model\":" + new string('[', 100_000) + new string(']', 100_000) + "}");
                expected = "depth";
                break;
            case "model-not-object":
                File.WriteAllText(path, """{"model": 5}""");
                expected = "has no \"model\" object";
                break;
            default:
                File.WriteAllText(path, """{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}""");
                expected = "vocabulary token 'a' has no valid id";
                break;
        }
        string message = Refused(folder);
        Assert.Contains(path, message);
        Assert.Contains(expected, message);
    }

    // ---------- safetensors headers that lie ----------

    [Theory]
    [InlineData("declares-huge-tensor", "ends at data offset 137438953472 but the data section holds only")]
    [InlineData("shape-overflow", "impossibly large shape")]
    [InlineData("negative-offset", "is not a non-negative integer")]
    [InlineData("header-deep", "not valid JSON")]
    [InlineData("header-length-huge", "exceeds the 100 MB limit")]
    public void HostileSafetensorsHeader_IsRefusedBeforeAnyAllocation(string kind, string expected)
    {
        string folder = ValidFolder("st-" + kind);
        string path = Path.Combine(folder, "model.safetensors");
        string header = kind switch
        {
            "declares-huge-tensor" => """{"model.embed_tokens.weight":{"dtype":"F32","shape":[1073741824,32],"data_offsets":[0,137438953472]}}""",
            "shape-overflow" => """{"model.embed_tokens.weight":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}""",
            "negative-offset" => """{"model.embed_tokens.weight":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}}""",
            "header-deep" => "{\"a\":" + new string('[', 1000) + new string(']', 1000) + "}",
            _ => "{}",
        };
        var bytes = System.Text.Encoding.UTF8.GetBytes(header);
        using (var f = File.Create(path))
        {
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, kind == "header-length-huge" ? 1UL << 50 : (ulong)bytes.Length);
            f.Write(length);
            f.Write(bytes);
            f.Write(new byte[16]);
        }
        string message = Refused(folder);
        Assert.Contains(path, message);
        Assert.Contains(expected, message);
    }

    // ---------- pickle checkpoints ----------

    [Theory]
    [InlineData("pytorch_model.bin")]
    [InlineData("model.pt")]
    [InlineData("weights.pth")]
    [InlineData("last.ckpt")]
    public void PickleCheckpoint_IsNeverUnpickled_AndTheMessageSaysHowToConvert(string file)
    {
        string folder = ValidFolder("pickle-" + file);
        File.Delete(Path.Combine(folder, "model.safetensors"));
        // A pickle that would run code when unpickled (os.system): it must never be opened.
        File.WriteAllBytes(Path.Combine(folder, file), [0x80, 0x02, (byte)'c', (byte)'o', (byte)'s', 0x0A, (byte)'s', (byte)'y', (byte)'s', (byte)'t', (byte)'e', (byte)'m', 0x0A]);
        string message = Refused(folder);
        Assert.Contains(folder, message);
        Assert.Contains($"'{file}'", message);
        Assert.Contains("never loaded", message);
        Assert.Contains("from safetensors.torch import save_file", message);
        Assert.Contains("safe_serialization=True", message);
    }

    // ---------- non-finite weights ----------

    private string WithNonFiniteWeight(string name, float value)
    {
        string folder = ValidFolder(name);
        string path = Path.Combine(folder, "model.safetensors");
        using var scope = NewDisposeScope();
        var all = SafeTensors.LoadAll(path);
        all["model.layers.1.mlp.down_proj.weight"][3, 5] = tensor(value);
        all["model.layers.1.mlp.down_proj.weight"][7, 1] = tensor(value);
        SafeTensors.Save(path, all.ToList());
        return folder;
    }

    [Theory]
    [InlineData(float.NaN, "2 non-finite values (2 NaN, 0 infinite)")]
    [InlineData(float.PositiveInfinity, "2 non-finite values (0 NaN, 2 infinite)")]
    public void NonFiniteWeights_AreRefusedNamingTheTensor(float value, string expected)
    {
        string folder = WithNonFiniteWeight("nonfinite-" + value, value);
        string message = Refused(folder);
        Assert.Contains("tensor 'model.layers.1.mlp.down_proj.weight'", message);
        Assert.Contains(Path.Combine(folder, "model.safetensors"), message);
        Assert.Contains(expected, message);
        Assert.Contains("AllowNonFiniteWeights", message);
    }

    [Fact]
    public void NonFiniteWeights_LoadWithAWarningWhenAllowed()
    {
        string folder = WithNonFiniteWeight("nonfinite-allowed", float.NaN);
        var logger = new ListLogger();
        using var model = UllmeModel.Load(folder, new ModelLoadOptions { AllowNonFiniteWeights = true, Logger = logger });
        var warning = Assert.Single(logger.Messages);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("model.layers.1.mlp.down_proj.weight", warning.Text);
        Assert.Contains("2 NaN", warning.Text);
    }

    private sealed class ListLogger : ILogger
    {
        public List<(LogLevel Level, string Text)> Messages { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Messages.Add((logLevel, formatter(state, exception)));
    }

    // ---------- a real process ----------

    /// <summary>
    /// Runs <c>ullme info --model folder</c> and returns exit code, stderr and the peak RSS in kB: exact from
    /// <c>/usr/bin/time</c> when it is installed, else the largest VmHWM of /proc/&lt;pid&gt;/status seen while polling.
    /// </summary>
    private (int Code, string Err, long PeakKb) RunInfo(string folder)
    {
        string dll = typeof(Ullme.Cli.UllmeCli).Assembly.Location;
        string timeOut = Path.Combine(_dir, $"time-{Guid.NewGuid():N}.txt");
        bool timed = File.Exists("/usr/bin/time");
        var psi = timed
            ? new ProcessStartInfo("/usr/bin/time", ["-f", "%M", "-o", timeOut, "dotnet", dll, "info", "--model", folder])
            : new ProcessStartInfo("dotnet", [dll, "info", "--model", folder]);
        psi.RedirectStandardError = true;
        psi.RedirectStandardOutput = true;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEndAsync();
        long peak = 0;
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (!p.HasExited)
        {
            if (!timed)
            {
                try
                {
                    foreach (string line in File.ReadLines($"/proc/{p.Id}/status"))
                        if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                            peak = Math.Max(peak, long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]));
                }
                catch (IOException) { }
            }
            if (DateTime.UtcNow > deadline)
            {
                p.Kill(entireProcessTree: true);
                Assert.Fail($"ullme info --model {folder} ran over 120 s");
            }
            Thread.Sleep(2);
        }
        p.WaitForExit();
        _ = output.Result;
        if (timed) peak = long.Parse(File.ReadAllText(timeOut).Trim().Split('\n')[^1]);
        return (p.ExitCode, err.Result, peak);
    }

    [Fact]
    public void HostileConfig_InARealProcess_FailsFastWithOneLineAndSmallPeakRss()
    {
        // The baseline: the same command loading the valid tiny model (process start-up, libtorch, a 93 KB model).
        var (baseCode, baseErr, basePeak) = RunInfo(ValidFolder("process-valid"));
        Assert.True(baseCode == 0, baseErr);
        output.WriteLine($"valid tiny model: exit 0, peak RSS {basePeak:N0} kB");

        // num_hidden_layers 1e6 and hidden_size 1e9 (today: 8 GB RSS in 135 s, or a libtorch abort, exit 134).
        string absurd = WithConfig("process-absurd", c => { c["num_hidden_layers"] = 1_000_000; c["hidden_size"] = 1_000_000_000; });
        // Sizes within the caps but 2,000 times the weights' layers: refused from the safetensors headers.
        string inconsistent = WithConfig("process-inconsistent", c => { c["num_hidden_layers"] = 4000; c["hidden_size"] = 4096; c["num_attention_heads"] = 32; c["num_key_value_heads"] = 8; });
        foreach (var (folder, field) in new[] { (absurd, "\"hidden_size\" is 1,000,000,000"), (inconsistent, "\"num_hidden_layers\" is 4,000") })
        {
            var sw = Stopwatch.StartNew();
            var (code, err, peak) = RunInfo(folder);
            output.WriteLine($"{Path.GetFileName(folder)}: exit {code} in {sw.ElapsedMilliseconds} ms, peak RSS {peak:N0} kB: {err.Trim()}");
            long folderBytes = Directory.EnumerateFiles(folder).Sum(f => new FileInfo(f).Length);
            Assert.Equal(1, code);
            Assert.StartsWith("error: ", err);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains(Path.Combine(folder, "config.json"), err);
            Assert.Contains(field, err);
            Assert.True(peak > 0, "VmHWM was not read");
            Assert.True(peak * 1024 < basePeak * 1024 + folderBytes + Slack,
                $"peak RSS {peak:N0} kB vs {basePeak:N0} kB loading the valid tiny model; folder {folderBytes:N0} bytes");
        }
    }
}
