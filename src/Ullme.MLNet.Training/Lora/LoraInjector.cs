using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Lora;

/// <summary>
/// Puts LoRA adapters into any TorchSharp module tree, and takes them out again.
/// <para>
/// <see cref="Apply"/> walks <c>named_modules()</c>, and every <see cref="Linear"/> whose name matches
/// <see cref="LoraOptions.TargetModules"/> (default: all but <c>lm_head</c>) is replaced in its parent by a
/// <see cref="LoraLinear"/> wrapping it: in the parent's registered children (same name, same position, so
/// parameter names and order are kept) and in the parent's field that holds it, so the parent's forward calls the
/// wrapper. Every other parameter of the tree is frozen.
/// </para>
/// <para>
/// Requirement on module code: a field that holds an adaptable linear layer must be declared with a type a
/// <see cref="LoraLinear"/> fits in, i.e. <c>nn.Module&lt;Tensor, Tensor&gt;</c> rather than the sealed
/// <c>Linear</c> (or the layer must sit in a <c>ModuleList&lt;nn.Module&lt;Tensor, Tensor&gt;&gt;</c>). Otherwise
/// <see cref="Apply"/> fails before changing anything, naming the field.
/// </para>
/// </summary>
internal static class LoraInjector
{
    private static readonly FieldInfo SubmodulesField =
        typeof(nn.Module).GetField("_internal_submodules", BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new InvalidOperationException("TorchSharp's nn.Module has no _internal_submodules field (TorchSharp version changed?).");

    /// <summary>
    /// Wraps the matching linear layers of <paramref name="root"/> with adapters and freezes every base parameter.
    /// </summary>
    /// <returns>The adapted layers by full name, in module order.</returns>
    public static IReadOnlyList<(string Name, LoraLinear Layer)> Apply(nn.Module root, LoraOptions options)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (FindLayers(root).Count > 0)
            throw new UllmeException("LoRA: the model already has adapters; merge or unload them before applying new ones.");

        var modules = root.named_modules().ToList();
        var byName = modules.ToDictionary(m => m.name, m => m.module);
        var plan = new List<(string Name, nn.Module Parent, string Child, Linear Layer, Action<nn.Module> Set)>();
        foreach (var (name, module) in modules)
        {
            if (module is not Linear linear) continue;
            if (options.ExcludedModules.Any(p => LoraOptions.NameMatches(name, p))) continue;
            if (options.TargetModules is not null && !options.TargetModules.Any(p => LoraOptions.NameMatches(name, p))) continue;
            int dot = name.LastIndexOf('.');
            var parent = dot < 0 ? root : byName[name[..dot]];
            string child = dot < 0 ? name : name[(dot + 1)..];
            plan.Add((name, parent, child, linear, PlanReplacement(parent, child, linear, typeof(LoraLinear), name)));
        }
        if (plan.Count == 0)
            throw new UllmeException(options.TargetModules is null
                ? "LoRA: the model has no linear layers to adapt."
                : $"LoRA: no linear layer matches TargetModules [{string.Join(", ", options.TargetModules)}].");

        var result = new List<(string, LoraLinear)>();
        foreach (var (name, parent, child, linear, set) in plan)
        {
            var lora = new LoraLinear(linear, options);
            set(lora);
            SetRegisteredChild(parent, child, lora);
            result.Add((name, lora));
        }

        var adapterParams = new HashSet<IntPtr>(result.SelectMany(r => new[] { r.Item2.LoraA.Handle, r.Item2.LoraB.Handle }));
        foreach (var (_, p) in root.named_parameters())
            p.requires_grad = adapterParams.Contains(p.Handle);
        return result;
    }

    /// <summary>The adapters in <paramref name="root"/> by full name.</summary>
    public static IReadOnlyList<(string Name, LoraLinear Layer)> FindLayers(nn.Module root) =>
        root.named_modules().Where(m => m.module is LoraLinear).Select(m => (m.name, (LoraLinear)m.module)).ToList();

    /// <summary>Switches every adapter on or off (off = the base model, e.g. the reference for DPO).</summary>
    public static void SetEnabled(nn.Module root, bool enabled)
    {
        foreach (var (_, layer) in FindLayers(root)) layer.Enabled = enabled;
    }

    /// <summary>Disables every adapter until the returned scope is disposed (then restores each one's state).</summary>
    public static IDisposable Disabled(nn.Module root)
    {
        var layers = FindLayers(root).Select(l => (l.Layer, l.Layer.Enabled)).ToList();
        foreach (var (layer, _) in layers) layer.Enabled = false;
        return new Restore(() => { foreach (var (layer, was) in layers) layer.Enabled = was; });
    }

    /// <summary>Adapter parameters by full name (<c>….q_proj.lora_A.weight</c>, <c>….q_proj.lora_B.weight</c>).</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> AdapterParameters(nn.Module root) =>
        root.named_parameters()
            .Where(p => p.name.Contains(".lora_A.", StringComparison.Ordinal) || p.name.Contains(".lora_B.", StringComparison.Ordinal)
                        || p.name.StartsWith("lora_A.", StringComparison.Ordinal) || p.name.StartsWith("lora_B.", StringComparison.Ordinal))
            .ToList();

    /// <summary>
    /// Folds every adapter into its base weight (W ← W + (α/r)·B·A) and puts the plain linear layers back, so the
    /// tree has exactly its original modules and parameter names again. Base parameters stay frozen; unfreeze them
    /// yourself if training continues.
    /// </summary>
    public static void MergeAndUnload(nn.Module root) => Unload(root, merge: true);

    /// <summary>Removes the adapters without merging: the tree computes the base model again.</summary>
    public static void Unload(nn.Module root, bool merge = false)
    {
        var modules = root.named_modules().ToList();
        var byName = modules.ToDictionary(m => m.name, m => m.module);
        foreach (var (name, module) in modules)
        {
            if (module is not LoraLinear lora) continue;
            int dot = name.LastIndexOf('.');
            var parent = dot < 0 ? root : byName[name[..dot]];
            string child = dot < 0 ? name : name[(dot + 1)..];
            var set = PlanReplacement(parent, child, lora, typeof(Linear), name);
            if (merge) lora.Merge();
            set(lora.BaseLayer);
            SetRegisteredChild(parent, child, lora.BaseLayer);
            lora.ReleaseBaseLayer();
            lora.Dispose();
        }
    }

    /// <summary>
    /// Finds where <paramref name="parent"/> holds <paramref name="current"/> (fields, or a list it is) and returns
    /// an action that stores a replacement there. Throws if a holder cannot take <paramref name="replacementType"/>.
    /// </summary>
    private static Action<nn.Module> PlanReplacement(nn.Module parent, string child, nn.Module current, Type replacementType, string fullName)
    {
        var setters = new List<Action<nn.Module>>();
        for (var type = parent.GetType(); type is not null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (!ReferenceEquals(field.GetValue(parent), current)) continue;
                if (!field.FieldType.IsAssignableFrom(replacementType))
                    throw new UllmeException(
                        $"LoRA cannot replace '{fullName}': field '{field.Name}' of {type.Name} is declared as {field.FieldType.Name}. " +
                        "Declare it as nn.Module<Tensor, Tensor> so an adapter can take its place.");
                // Reflection may set readonly instance fields too, which is what module code usually declares.
                setters.Add(m => field.SetValue(parent, m));
            }
        }
        // ModuleList<T> (and any IList<T> module): the parent indexes the list in its forward.
        var listType = parent.GetType().GetInterfaces()
            .FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IList<>));
        if (listType is not null && int.TryParse(child, out int index))
        {
            var item = listType.GetProperty("Item")!;
            int count = (int)listType.GetInterfaces().First(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(ICollection<>))
                .GetProperty("Count")!.GetValue(parent)!;
            if (index >= 0 && index < count && ReferenceEquals(item.GetValue(parent, [index]), current))
            {
                var elementType = listType.GetGenericArguments()[0];
                if (!elementType.IsAssignableFrom(replacementType))
                    throw new UllmeException(
                        $"LoRA cannot replace '{fullName}': it sits in a list of {elementType.Name}. Use a list of nn.Module<Tensor, Tensor>.");
                setters.Add(m => item.SetValue(parent, m, [index]));
            }
        }
        if (setters.Count == 0)
            throw new UllmeException(
                $"LoRA cannot replace '{fullName}': {parent.GetType().Name} registers it but holds it in no field or list, " +
                "so its forward would keep calling the plain layer.");
        return m => { foreach (var s in setters) s(m); };
    }

    /// <summary>Replaces a registered child in place (same key, same position in the ordered registry).</summary>
    private static void SetRegisteredChild(nn.Module parent, string child, nn.Module replacement)
    {
        var registry = (IDictionary<string, nn.Module>)SubmodulesField.GetValue(parent)!;
        if (!registry.ContainsKey(child))
            throw new UllmeException($"LoRA: {parent.GetType().Name} has no registered child '{child}'.");
        registry[child] = replacement;
    }

    private sealed class Restore(Action action) : IDisposable
    {
        private Action? _action = action;

        public void Dispose()
        {
            _action?.Invoke();
            _action = null;
        }
    }
}
