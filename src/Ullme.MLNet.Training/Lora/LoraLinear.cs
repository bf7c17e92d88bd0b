using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Lora;

/// <summary>
/// A linear layer with a low-rank trainable update (LoRA):
/// <code>
///   y = W x + b + (α / r) · B(A(dropout(x)))      A: [r, in] kaiming-uniform,  B: [out, r] zeros
/// </code>
/// W and b stay frozen; only A and B train, so an adapter has r·(in + out) parameters per layer. B starts at zero,
/// so the wrapped layer initially computes exactly what the base layer did.
/// <para>
/// Parameter names follow Hugging Face / PEFT: the base weight keeps its name (<c>q_proj.weight</c>, the same
/// tensor object as the wrapped <see cref="Linear"/>'s), the adapter adds <c>q_proj.lora_A.weight</c> and
/// <c>q_proj.lora_B.weight</c>. <see cref="Enabled"/> = false computes the base layer alone (the reference model
/// for preference losses); <see cref="Merge"/> folds the update into W for export.
/// </para>
/// </summary>
internal sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    private readonly Linear _base;
    private readonly Linear lora_A;
    private readonly Linear lora_B;
    private readonly nn.Module<Tensor, Tensor> lora_dropout;
    private bool _registered;
    private bool _baseReleased;

    /// <summary>Wraps <paramref name="baseLayer"/> (whose parameters are shared, not copied).</summary>
    public LoraLinear(Linear baseLayer, LoraOptions options) : base(nameof(LoraLinear))
    {
        ArgumentNullException.ThrowIfNull(baseLayer);
        options.Validate();
        _base = baseLayer;
        Rank = options.Rank;
        Alpha = options.Alpha;
        Scale = options.Scale;
        var device = baseLayer.weight.device;
        lora_A = nn.Linear(baseLayer.in_features, Rank, hasBias: false, device: device, dtype: options.AdapterDType);    // kaiming-uniform(a=√5)
        lora_B = nn.Linear(Rank, baseLayer.out_features, hasBias: false, device: device, dtype: options.AdapterDType);
        using (no_grad()) lora_B.weight.zero_();
        lora_dropout = options.Dropout > 0 ? new ReplayableDropout(options.Dropout) : nn.Identity();
        RegisterComponents();
    }

    /// <summary>The wrapped layer (its weight is this module's <c>weight</c>).</summary>
    public Linear BaseLayer => _base;

    /// <summary>A: [r, in].</summary>
    public Parameter LoraA => lora_A.weight;

    /// <summary>B: [out, r].</summary>
    public Parameter LoraB => lora_B.weight;

    public int Rank { get; }
    public double Alpha { get; }

    /// <summary>α / r.</summary>
    public double Scale { get; }

    /// <summary>When false the layer computes W x + b only (base weights). Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>True after <see cref="Merge"/>: W already contains the update, which is then not added again.</summary>
    public bool Merged { get; private set; }

    public override Tensor forward(Tensor x)
    {
        var y = nn.functional.linear(x, _base.weight, _base.bias);
        if (!Enabled || Merged) return y;
        using var scope = NewDisposeScope();
        var xa = x.dtype == lora_A.weight.dtype ? x : x.to(lora_A.weight.dtype);
        var delta = lora_B.forward(lora_A.forward(lora_dropout.forward(xa))).Mul(Scale);   // [.., out]
        return y.AddInPlace(delta.to(y.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>W ← W + (α/r)·B·A, rounded once into W's dtype. Afterwards the adapter branch is skipped (idempotent).</summary>
    public void Merge()
    {
        if (Merged) return;
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            // Accumulate in float32 at least (float64 if the base is float64), then round once into W's dtype.
            var dt = _base.weight.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
            var update = lora_B.weight.to(dt).matmul(lora_A.weight.to(dt)).Mul(Scale);   // [out, in]
            _base.weight.AddInPlace(update.to(_base.weight.dtype));
        }
        Merged = true;
    }

    protected override void RegisterComponents()
    {
        if (_registered) return;
        register_parameter("weight", _base.weight);
        if (_base.bias is { } bias) register_parameter("bias", bias);
        register_module(nameof(lora_A), lora_A);
        register_module(nameof(lora_B), lora_B);
        register_module(nameof(lora_dropout), lora_dropout);
        _registered = true;
    }

    // Moving the module moves the base layer (whose parameters may be replaced) and the adapter; a dtype change
    // applies to the base layer only, so the adapter keeps its master precision.
    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking)
    {
        _base.to(device, dtype, non_blocking);
        lora_A.to(device, non_blocking);
        lora_B.to(device, non_blocking);
        RebindBase();
        return this;
    }

    protected override nn.Module _to(DeviceType deviceType, int deviceIndex, bool non_blocking)
    {
        _base.to(deviceType, deviceIndex, non_blocking);
        lora_A.to(deviceType, deviceIndex, non_blocking);
        lora_B.to(deviceType, deviceIndex, non_blocking);
        RebindBase();
        return this;
    }

    protected override nn.Module _to(ScalarType dtype, bool non_blocking)
    {
        _base.to(dtype, non_blocking);
        RebindBase();
        return this;
    }

    private void RebindBase()
    {
        ConditionallyRegisterParameter("weight", _base.weight);
        if (_base.bias is { } bias) ConditionallyRegisterParameter("bias", bias);
    }

    /// <summary>After unloading, the base layer lives on in the model: disposing the wrapper must not dispose it.</summary>
    internal void ReleaseBaseLayer() => _baseReleased = true;

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            // The base parameters belong to the base layer: unregister them so the generic disposal skips them.
            ConditionallyRegisterParameter("weight", (Parameter?)null);
            ConditionallyRegisterParameter("bias", (Parameter?)null);
            if (!_baseReleased) _base.Dispose();
        }
        base.Dispose(disposing);
    }
}
