using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Lora;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Lora;

/// <summary>A decoder-shaped toy: layers.N.self_attn.{q,k,o}_proj, layers.N.mlp.N (a list), a norm, and lm_head
/// held in a field typed Linear (as a head usually is).</summary>
internal sealed class ToyAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> q_proj, k_proj, o_proj;

    public ToyAttention(int h, ScalarType dtype) : base(nameof(ToyAttention))
    {
        q_proj = nn.Linear(h, h, hasBias: true, dtype: dtype);
        k_proj = nn.Linear(h, h, hasBias: false, dtype: dtype);
        o_proj = nn.Linear(h, h, hasBias: false, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => o_proj.forward(q_proj.forward(x) * k_proj.forward(x).tanh());
}

internal sealed class ToyBlock : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm input_layernorm;
    private readonly ToyAttention self_attn;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> mlp;

    public ToyBlock(int h, ScalarType dtype) : base(nameof(ToyBlock))
    {
        input_layernorm = nn.LayerNorm(h, dtype: dtype);
        self_attn = new ToyAttention(h, dtype);
        mlp = new ModuleList<nn.Module<Tensor, Tensor>>(nn.Linear(h, 2 * h, dtype: dtype), nn.Linear(2 * h, h, dtype: dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var a = x + self_attn.forward(input_layernorm.forward(x));
        return a + mlp[1].forward(mlp[0].forward(a).relu());
    }
}

internal sealed class ToyModel : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ToyBlock> layers;
    private readonly Linear lm_head;

    public ToyModel(int h = 4, int layerCount = 2, ScalarType dtype = ScalarType.Float64) : base(nameof(ToyModel))
    {
        layers = new ModuleList<ToyBlock>(Enumerable.Range(0, layerCount).Select(_ => new ToyBlock(h, dtype)).ToArray());
        lm_head = nn.Linear(h, 7, hasBias: false, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        foreach (var layer in layers) x = layer.forward(x);
        return lm_head.forward(x);
    }
}

[Collection(TorchCollection.Name)]
public class LoraTests
{
    private static readonly LoraOptions Exact = new() { Rank = 2, Alpha = 6, Dropout = 0, AdapterDType = ScalarType.Float64 };

    private static ToyModel NewModel(int seed = 1)
    {
        manual_seed(seed);
        return new ToyModel();
    }

    private static void RandomizeB(nn.Module root, int seed = 5)
    {
        manual_seed(seed);
        using var _ = no_grad();
        foreach (var (_, layer) in LoraInjector.FindLayers(root)) layer.LoraB.normal_(0, 0.5);
    }

    private static Tensor Input() => T(Values(9, 3 * 4), 3, 4);

    [Fact]
    public void BaseNamesAndOrderAreKeptAndAdapterParametersUsePeftNames()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var before = model.named_parameters().Select(p => p.name).ToList();
        var adapted = LoraInjector.Apply(model, Exact);

        var after = model.named_parameters().Select(p => p.name).ToList();
        Assert.Equal(before, after.Where(n => !n.Contains(".lora_")).ToList());
        Assert.Equal(
            ["layers.0.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.bias",
             "layers.0.self_attn.q_proj.lora_A.weight", "layers.0.self_attn.q_proj.lora_B.weight"],
            after.Take(6).Skip(2));
        Assert.Equal(10, adapted.Count);   // 2 layers × (q, k, o, mlp.0, mlp.1); lm_head excluded
        Assert.DoesNotContain(adapted, a => a.Name.Contains("lm_head"));
        Assert.Contains(adapted, a => a.Name == "layers.1.mlp.0");
        Assert.Equal(20, LoraInjector.AdapterParameters(model).Count);
        Assert.Equal([2L, 4L], model.named_parameters().First(p => p.name == "layers.0.mlp.0.lora_A.weight").parameter.shape);
        Assert.Equal([8L, 2L], model.named_parameters().First(p => p.name == "layers.0.mlp.0.lora_B.weight").parameter.shape);
    }

    [Fact]
    public void OnlyAdapterParametersRequireGradAndBStartsAtZeroSoTheModelIsUnchanged()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var baseOut = model.forward(Input()).detach();
        LoraInjector.Apply(model, Exact);
        foreach (var (name, p) in model.named_parameters())
            Assert.True(p.requires_grad == name.Contains(".lora_"), $"{name}: requires_grad = {p.requires_grad}");
        Close(Data(baseOut), Data(model.forward(Input())), 0, "output with fresh adapters");

        // At B = 0 the gradient reaches B but not A (∂L/∂A = (α/r)·Bᵀ·…).
        model.forward(Input()).square().sum().backward();
        foreach (var (name, p) in model.named_parameters())
        {
            if (!p.requires_grad) { Assert.Null(p.grad); continue; }
            double norm = p.grad!.norm().item<double>();
            if (name.EndsWith("lora_A.weight")) Assert.Equal(0.0, norm);
            else Assert.True(norm > 0, $"{name} has no gradient");
        }
    }

    [Fact]
    public void ForwardIsBasePlusScaledLowRankUpdate()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var linear = nn.Linear(4, 3, hasBias: true, dtype: ScalarType.Float64);
        var lora = new LoraLinear(linear, Exact);
        using (no_grad()) lora.LoraB.normal_();
        var x = Input();
        var w = Data(linear.weight); var b = Data(linear.bias!); var a = Data(lora.LoraA); var bb = Data(lora.LoraB); var xs = Data(x);
        var expected = new double[3 * 3];
        for (int n = 0; n < 3; n++)
            for (int o = 0; o < 3; o++)
            {
                double y = b[o] + Dot(w, 4 * o, xs, 4 * n, 4);
                for (int r = 0; r < 2; r++) y += 3.0 * bb[2 * o + r] * Dot(a, 4 * r, xs, 4 * n, 4);   // α/r = 6/2
                expected[3 * n + o] = y;
            }
        Close(expected, Data(lora.forward(x)), 1e-12, "y");
    }

    [Fact]
    public void DisabledAdaptersComputeTheBaseModelAndTheScopeRestoresThem()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var baseOut = Data(model.forward(Input()));
        LoraInjector.Apply(model, Exact);
        RandomizeB(model);
        var adaptedOut = Data(model.forward(Input()));
        Assert.True(adaptedOut.Zip(baseOut).Max(p => Math.Abs(p.First - p.Second)) > 1e-3);
        using (LoraInjector.Disabled(model))
            Close(baseOut, Data(model.forward(Input())), 0, "disabled output");
        Close(adaptedOut, Data(model.forward(Input())), 0, "re-enabled output");
    }

    [Fact]
    public void MergeAndUnloadGivesTheAdaptedOutputWithTheOriginalModulesAndNames()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var names = model.named_parameters().Select(p => p.name).ToList();
        LoraInjector.Apply(model, Exact);
        RandomizeB(model);
        var adaptedOut = Data(model.forward(Input()));
        LoraInjector.MergeAndUnload(model);
        Assert.Empty(LoraInjector.FindLayers(model));
        Assert.All(model.named_modules().Where(m => m.name.EndsWith("_proj") || m.name.Contains("mlp.")), m => Assert.IsType<Linear>(m.module));
        Assert.Equal(names, model.named_parameters().Select(p => p.name).ToList());
        Close(adaptedOut, Data(model.forward(Input())), 1e-12, "merged output");
    }

    [Fact]
    public void UnloadWithoutMergeRestoresTheBaseModel()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var baseOut = Data(model.forward(Input()));
        LoraInjector.Apply(model, Exact);
        RandomizeB(model);
        LoraInjector.Unload(model);
        Close(baseOut, Data(model.forward(Input())), 0, "unloaded output");
    }

    [Fact]
    public void TargetModulesSelectLayersByNameSuffix()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var adapted = LoraInjector.Apply(model, Exact with { TargetModules = ["q_proj", "o_proj"] });
        Assert.Equal(["layers.0.self_attn.q_proj", "layers.0.self_attn.o_proj", "layers.1.self_attn.q_proj", "layers.1.self_attn.o_proj"],
            adapted.Select(a => a.Name));
    }

    [Fact]
    public void ALinearInAFieldTypedLinearIsRejectedBeforeAnythingChanges()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        var e = Assert.Throws<UllmeException>(() => LoraInjector.Apply(model, Exact with { TargetModules = ["q_proj", "lm_head"], ExcludedModules = [] }));
        Assert.Contains("'lm_head'", e.Message);
        Assert.Contains("field 'lm_head' of ToyModel", e.Message);
        Assert.Empty(LoraInjector.FindLayers(model));
        Assert.All(model.parameters(), p => Assert.True(p.requires_grad));
        e = Assert.Throws<UllmeException>(() => LoraInjector.Apply(model, Exact with { TargetModules = ["nothing"] }));
        Assert.Contains("nothing", e.Message);
    }

    [Fact]
    public void BFloat16BaseKeepsFloat32AdapterWeights()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        using var model = new ToyModel(dtype: ScalarType.Float32);
        LoraInjector.Apply(model, new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0 });
        model.to(ScalarType.BFloat16);
        foreach (var (name, p) in model.named_parameters())
            Assert.Equal(name.Contains(".lora_") ? ScalarType.Float32 : ScalarType.BFloat16, p.dtype);
        // The wrapper's registered weight is the base layer's (converted) weight.
        var (_, q) = LoraInjector.FindLayers(model)[0];
        Assert.Same(q.BaseLayer.weight, model.named_parameters().First(p => p.name == "layers.0.self_attn.q_proj.weight").parameter);
        var y = model.forward(Input().to(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        y.to(ScalarType.Float32).sum().backward();
        Assert.NotNull(q.LoraB.grad);
        Assert.Equal(ScalarType.Float32, q.LoraB.grad!.dtype);
    }

    [Fact]
    public void DropoutActsOnlyInTrainingModeAndReplaysUnderTheSameSeed()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel();
        LoraInjector.Apply(model, Exact with { Dropout = 0.5 });
        RandomizeB(model);
        model.train();
        manual_seed(11);
        var a = Data(model.forward(Input()));
        manual_seed(11);
        var b = Data(model.forward(Input()));
        var c = Data(model.forward(Input()));
        Close(a, b, 0, "same seed");
        Assert.True(a.Zip(c).Max(p => Math.Abs(p.First - p.Second)) > 1e-6);
        model.eval();
        Close(Data(model.forward(Input())), Data(model.forward(Input())), 0, "eval");
    }

    [Fact]
    public void InvalidOptionsAreNamed()
    {
        using var model = NewModel();
        Assert.Contains("Rank", Assert.Throws<UllmeException>(() => LoraInjector.Apply(model, Exact with { Rank = 0 })).Message);
        Assert.Contains("Dropout", Assert.Throws<UllmeException>(() => LoraInjector.Apply(model, Exact with { Dropout = 1 })).Message);
    }
}
