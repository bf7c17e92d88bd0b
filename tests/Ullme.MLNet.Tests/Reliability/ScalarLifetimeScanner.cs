using System.Collections.Immutable;
using Mono.Cecil;
using Mono.Cecil.Cil;

namespace Ullme.MLNet.Tests.Reliability;

/// <summary>One call that hands libtorch a <c>TorchSharp.Scalar</c> nobody holds for the whole native call.</summary>
public sealed record ScalarFinding(string Assembly, string Method, int IlOffset, string? Source, int Line, string Callee, string Why)
{
    public override string ToString() =>
        $"{Source ?? "?"}:{Line}  {Method}  IL_{IlOffset:x4}  {Callee}: {Why}";
}

/// <summary>
/// Reads compiled IL (Mono.Cecil) and finds the two ways a temporary <c>TorchSharp.Scalar</c> reaches libtorch in
/// TorchSharp 0.107, where the wrappers read <c>scalar.Handle</c> and call native code without <c>GC.KeepAlive</c>,
/// so a collection on another thread can finalize the Scalar mid-call:
/// <list type="number">
/// <item>our code passes a Scalar made on the spot (<c>Scalar.op_Implicit</c> from a C# number, or
/// <c>ToScalar()</c>) — or kept in a local that is neither disposed nor <c>GC.KeepAlive</c>d afterwards — to any
/// method with a <c>Scalar</c> parameter;</item>
/// <item>our code calls a TorchSharp method that makes such a temporary itself: found by the same analysis run over
/// TorchSharp.dll's own IL and closed over its internal calls (so <c>a + b</c> → <c>add(b)</c> → <c>add(b, 1)</c>,
/// <c>x * 0.5</c>, <c>add_(t)</c>, <c>addcdiv(t1, t2)</c> and the like are all found, whatever the TorchSharp version).</item>
/// </list>
/// A Scalar argument counts as held when it comes from a static or instance field, a parameter (the caller is
/// checked in turn), a local that is disposed or kept alive by <c>GC.KeepAlive</c> later in the method
/// (<c>using var s = 0.5.ToScalar()</c>), or a method of <c>Ullme.MLNet.Tensors</c> (the cached Scalars).
/// </summary>
public sealed class ScalarLifetimeScanner
{
    private const string ScalarType = "TorchSharp.Scalar";
    private const string TrustedNamespace = "Ullme.MLNet.Tensors";

    /// <summary>TorchSharp methods that create a temporary Scalar internally, with the first reason found.</summary>
    public IReadOnlyDictionary<string, string> UnsafeTorchSharpMethods => _unsafe;

    private readonly Dictionary<string, string> _unsafe = new(StringComparer.Ordinal);

    public ScalarLifetimeScanner(string torchSharpPath)
    {
        using var module = ModuleDefinition.ReadModule(torchSharpPath, new ReaderParameters { ReadSymbols = false });
        AnalyseTorchSharp(module);
    }

    /// <summary>The TorchSharp method's key as used in <see cref="UnsafeTorchSharpMethods"/>.</summary>
    public static string Key(MethodReference m) => m.GetElementMethod().FullName;

    private void AnalyseTorchSharp(ModuleDefinition module)
    {
        var methods = module.GetTypes().SelectMany(t => t.Methods).Where(m => m.HasBody).ToList();
        var callers = new Dictionary<string, List<MethodDefinition>>(StringComparer.Ordinal);
        foreach (var m in methods)
        {
            foreach (var finding in TemporaryScalarArguments(m, definiteOnly: true))
            {
                _unsafe.TryAdd(Key(m), $"passes {finding.Why} to {finding.Callee}");
                break;
            }
            foreach (var ins in m.Body.Instructions)
            {
                if (ins.Operand is not MethodReference callee || !IsCall(ins.OpCode)) continue;
                if (!IsTorchSharp(callee)) continue;
                string key = Key(callee);
                if (!callers.TryGetValue(key, out var list)) callers[key] = list = [];
                list.Add(m);
            }
        }
        // Close over internal calls: a method that calls an unsafe one is unsafe.
        var work = new Queue<string>(_unsafe.Keys);
        while (work.Count > 0)
        {
            string key = work.Dequeue();
            if (!callers.TryGetValue(key, out var list)) continue;
            foreach (var caller in list)
            {
                if (_unsafe.TryAdd(Key(caller), $"calls {Short(key)}")) work.Enqueue(Key(caller));
            }
        }
    }

    /// <summary>Every finding in the assembly at <paramref name="path"/> (symbols read when a .pdb is beside it).</summary>
    public List<ScalarFinding> ScanAssembly(string path, Func<MethodDefinition, bool>? include = null)
    {
        var resolver = new DefaultAssemblyResolver();
        resolver.AddSearchDirectory(Path.GetDirectoryName(path)!);
        bool symbols = File.Exists(Path.ChangeExtension(path, ".pdb"));
        using var module = ModuleDefinition.ReadModule(path, new ReaderParameters { ReadSymbols = symbols, AssemblyResolver = resolver });
        var findings = new List<ScalarFinding>();
        foreach (var type in module.GetTypes())
            foreach (var m in type.Methods)
                if (m.HasBody && (include is null || include(m)))
                    findings.AddRange(ScanMethod(m));
        return findings;
    }

    /// <summary>Findings in one method of our code.</summary>
    public IEnumerable<ScalarFinding> ScanMethod(MethodDefinition method)
    {
        foreach (var f in TemporaryScalarArguments(method, definiteOnly: false)) yield return f;
        foreach (var ins in method.Body.Instructions)
        {
            if (ins.Operand is not MethodReference callee || !IsCall(ins.OpCode) || !IsTorchSharp(callee)) continue;
            if (_unsafe.TryGetValue(Key(callee), out string? why))
                yield return Finding(method, ins, callee, $"creates a temporary Scalar inside TorchSharp ({why})");
        }
    }

    /// <summary>Calls in <paramref name="method"/> whose Scalar argument nobody holds. <paramref name="definiteOnly"/>:
    /// only Scalars made on the spot or kept in an unheld local (TorchSharp's own IL, where other producers, e.g.
    /// its internal caches, are not our concern); else also Scalars of unknown lifetime (our code).</summary>
    private static IEnumerable<ScalarFinding> TemporaryScalarArguments(MethodDefinition method, bool definiteOnly)
    {
        var calls = method.Body.Instructions
            .Where(i => IsCall(i.OpCode) && i.Operand is MethodReference mr && mr.Parameters.Any(p => IsScalar(p.ParameterType)))
            .ToList();
        if (calls.Count == 0) yield break;
        var stacks = StackFlow.Analyse(method);
        HashSet<int>? heldLocals = null;
        foreach (var call in calls)
        {
            if (!stacks.TryGetValue(call, out var stack)) continue;   // unreachable
            var callee = (MethodReference)call.Operand;
            int n = callee.Parameters.Count;
            for (int i = 0; i < n; i++)
            {
                if (!IsScalar(callee.Parameters[i].ParameterType)) continue;
                var slot = stack.Peek(n - 1 - i);
                foreach (var producer in slot)
                {
                    var (definite, why) = Classify(producer, method, stacks, ref heldLocals);
                    if (why is not null && (definite || !definiteOnly))
                    {
                        string name = callee.Parameters[i].Name is { Length: > 0 } n0 ? n0 : SafeResolve(callee)?.Parameters[i].Name ?? $"#{i}";
                        yield return Finding(method, call, callee, $"argument '{name}' is {why}");
                    }
                }
            }
        }
    }

    /// <summary>Why null when the producer yields a held Scalar, else what is wrong with it; definite: the Scalar is
    /// certainly a temporary (made on the spot, or a local nobody holds).</summary>
    private static (bool Definite, string? Why) Classify(Instruction? producer, MethodDefinition method,
        Dictionary<Instruction, StackFlow.Stack> stacks, ref HashSet<int>? heldLocals)
    {
        if (producer is null) return (false, null);   // an exception object or unknown entry state
        var code = producer.OpCode.Code;
        if (IsCall(producer.OpCode) && producer.Operand is MethodReference m)
        {
            if (IsScalarFactory(m)) return (true, $"a temporary Scalar ({Short(m)})");
            if (m.DeclaringType.Namespace == TrustedNamespace || m.DeclaringType.DeclaringType?.Namespace == TrustedNamespace) return (false, null);
            return (false, $"a Scalar returned by {Short(m)}, of unknown lifetime");
        }
        int? local = LocalIndex(producer, method);
        if (local is int index)
        {
            heldLocals ??= HeldLocals(method, stacks);
            return heldLocals.Contains(index) ? (false, null) : (true, $"local V_{index}, neither disposed nor kept alive after the call");
        }
        return code switch
        {
            Code.Ldsfld or Code.Ldfld or Code.Ldnull => (false, null),
            Code.Ldarg or Code.Ldarg_S or Code.Ldarg_0 or Code.Ldarg_1 or Code.Ldarg_2 or Code.Ldarg_3 => (false, null),
            _ => (false, $"a Scalar from {producer.OpCode.Name}, of unknown lifetime"),
        };
    }

    /// <summary>Locals passed to <c>Dispose</c> or <c>GC.KeepAlive</c> somewhere in the method.</summary>
    private static HashSet<int> HeldLocals(MethodDefinition method, Dictionary<Instruction, StackFlow.Stack> stacks)
    {
        var held = new HashSet<int>();
        foreach (var ins in method.Body.Instructions)
        {
            if (!IsCall(ins.OpCode) || ins.Operand is not MethodReference m) continue;
            bool dispose = m.Name == "Dispose" && m.Parameters.Count == 0 && m.HasThis;
            bool keepAlive = m.Name == "KeepAlive" && m.DeclaringType.FullName == "System.GC";
            if (!dispose && !keepAlive) continue;
            if (!stacks.TryGetValue(ins, out var stack)) continue;
            foreach (var p in stack.Peek(0))
                if (p is not null && LocalIndex(p, method) is int index) held.Add(index);
        }
        return held;
    }

    private static int? LocalIndex(Instruction ins, MethodDefinition method) => ins.OpCode.Code switch
    {
        Code.Ldloc_0 => 0,
        Code.Ldloc_1 => 1,
        Code.Ldloc_2 => 2,
        Code.Ldloc_3 => 3,
        Code.Ldloc or Code.Ldloc_S => ((VariableDefinition)ins.Operand).Index,
        _ => null,
    };

    private static MethodDefinition? SafeResolve(MethodReference m)
    {
        try { return m.Resolve(); }
        catch (AssemblyResolutionException) { return null; }
    }

    private static bool IsScalarFactory(MethodReference m) =>
        (m.Name == "op_Implicit" && m.DeclaringType.FullName == ScalarType)
        || (m.DeclaringType.FullName == "TorchSharp.ScalarExtensionMethods" && m.Name.StartsWith("To", StringComparison.Ordinal) && IsScalar(m.ReturnType));

    private static bool IsScalar(TypeReference t) => t.FullName == ScalarType;

    private static bool IsTorchSharp(MethodReference m) => m.DeclaringType.Scope switch
    {
        AssemblyNameReference a => a.Name == "TorchSharp",
        ModuleDefinition md => md.Assembly.Name.Name == "TorchSharp",
        _ => false,
    };

    private static bool IsCall(OpCode op) => op.Code is Code.Call or Code.Callvirt or Code.Newobj;

    private static string Short(MethodReference m) => Short(Key(m));

    /// <summary>"TorchSharp.torch/Tensor::add(TorchSharp.torch/Tensor)" without the return type and namespaces.</summary>
    public static string Short(string fullName)
    {
        int space = fullName.IndexOf(' ');
        string s = space >= 0 ? fullName[(space + 1)..] : fullName;
        return s.Replace("TorchSharp.", "", StringComparison.Ordinal).Replace("System.", "", StringComparison.Ordinal);
    }

    private static ScalarFinding Finding(MethodDefinition method, Instruction ins, MethodReference callee, string why)
    {
        var (source, line) = SourceOf(method, ins);
        return new ScalarFinding(method.Module.Assembly.Name.Name, FriendlyName(method), ins.Offset, source, line, Short(callee), why);
    }

    /// <summary>The source line of the nearest sequence point at or before the instruction.</summary>
    private static (string? Source, int Line) SourceOf(MethodDefinition method, Instruction ins)
    {
        if (!method.DebugInformation.HasSequencePoints) return (null, 0);
        SequencePoint? best = null;
        foreach (var sp in method.DebugInformation.SequencePoints)
        {
            if (sp.Offset > ins.Offset) break;
            if (!sp.IsHidden) best = sp;
        }
        best ??= method.DebugInformation.SequencePoints.FirstOrDefault(sp => !sp.IsHidden);
        return best is null ? (null, 0) : (best.Document.Url, best.StartLine);
    }

    /// <summary>Type.Method, with compiler-generated closures and state machines named after their user method.</summary>
    public static string FriendlyName(MethodDefinition method)
    {
        var type = method.DeclaringType;
        var outer = type;
        while (outer.DeclaringType is not null && outer.Name.Contains('<')) outer = outer.DeclaringType;
        string name = method.Name;
        if (type.Name.StartsWith('<') && type.Name.Contains(">d__")) name = type.Name[1..type.Name.IndexOf('>')];
        return $"{outer.FullName}.{name}";
    }

    /// <summary>
    /// Which instructions may have pushed each slot of the evaluation stack before every instruction (a forward
    /// data-flow over the method's IL, merging at branch targets; exception handlers start with the exception or
    /// an empty stack).
    /// </summary>
    public static class StackFlow
    {
        /// <summary>Immutable evaluation stack; each slot holds the instructions that may have pushed it.</summary>
        public sealed record Stack(ImmutableHashSet<Instruction?> Top, Stack? Below, int Depth)
        {
            public ImmutableHashSet<Instruction?> Peek(int depth)
            {
                Stack? s = this;
                for (int i = 0; i < depth && s is not null; i++) s = s.Below;
                return s?.Top ?? [null];
            }
        }

        private static readonly ImmutableHashSet<Instruction?> Unknown = [null];

        public static Dictionary<Instruction, Stack> Analyse(MethodDefinition method)
        {
            var body = method.Body;
            var states = new Dictionary<Instruction, Stack>();
            var empty = new Stack(ImmutableHashSet<Instruction?>.Empty, null, 0);   // sentinel for depth 0
            var work = new Queue<Instruction>();

            void Flow(Instruction target, Stack state)
            {
                if (states.TryGetValue(target, out var old))
                {
                    var merged = Merge(old, state);
                    if (ReferenceEquals(merged, old)) return;
                    states[target] = merged;
                }
                else
                {
                    states[target] = state;
                }
                work.Enqueue(target);
            }

            if (body.Instructions.Count == 0) return states;
            Flow(body.Instructions[0], empty);
            foreach (var h in body.ExceptionHandlers)
            {
                if (h.HandlerType is ExceptionHandlerType.Catch or ExceptionHandlerType.Filter)
                    Flow(h.HandlerStart, Push(empty, Unknown));
                else
                    Flow(h.HandlerStart, empty);
                if (h.FilterStart is not null) Flow(h.FilterStart, Push(empty, Unknown));
            }

            while (work.Count > 0)
            {
                var ins = work.Dequeue();
                var stack = states[ins];
                var after = Step(ins, stack, method, empty);
                foreach (var next in Successors(ins))
                    Flow(next, ins.OpCode.Code is Code.Leave or Code.Leave_S ? empty : after);
            }
            return states;
        }

        private static Stack Push(Stack s, ImmutableHashSet<Instruction?> top) => new(top, s, s.Depth + 1);

        private static Stack Pop(Stack s, int count, Stack empty)
        {
            for (int i = 0; i < count; i++) s = s.Below ?? empty;
            return s;
        }

        private static Stack Merge(Stack a, Stack b)
        {
            if (a.Depth != b.Depth || a.Depth == 0) return a;   // inconsistent depths do not occur in verifiable IL
            var below = a.Below is null || b.Below is null ? a.Below : Merge(a.Below, b.Below);
            var top = a.Top.Union(b.Top);
            if (ReferenceEquals(below, a.Below) && top.Count == a.Top.Count) return a;
            return new Stack(top, below, a.Depth);
        }

        private static Stack Step(Instruction ins, Stack s, MethodDefinition method, Stack empty)
        {
            var op = ins.OpCode;
            var self = ImmutableHashSet.Create<Instruction?>(ins);
            switch (op.Code)
            {
                case Code.Dup:
                    return Push(s, s.Top);
                case Code.Call or Code.Callvirt or Code.Newobj:
                    {
                        var m = (MethodReference)ins.Operand;
                        int pops = m.Parameters.Count + (m.HasThis && op.Code != Code.Newobj ? 1 : 0);
                        s = Pop(s, pops, empty);
                        bool pushes = op.Code == Code.Newobj || m.ReturnType.MetadataType != MetadataType.Void;
                        return pushes ? Push(s, self) : s;
                    }
                case Code.Calli:
                    {
                        var site = (CallSite)ins.Operand;
                        s = Pop(s, site.Parameters.Count + 1 + (site.HasThis ? 1 : 0), empty);
                        return site.ReturnType.MetadataType != MetadataType.Void ? Push(s, self) : s;
                    }
                case Code.Ret:
                    return method.ReturnType.MetadataType != MetadataType.Void ? Pop(s, 1, empty) : s;
            }
            s = Pop(s, PopCount(op.StackBehaviourPop, s), empty);
            return op.StackBehaviourPush switch
            {
                StackBehaviour.Push0 => s,
                StackBehaviour.Push1_push1 => Push(Push(s, self), self),
                _ => Push(s, self),
            };
        }

        private static int PopCount(StackBehaviour b, Stack s) => b switch
        {
            StackBehaviour.Pop0 => 0,
            StackBehaviour.Pop1 or StackBehaviour.Popi or StackBehaviour.Popref => 1,
            StackBehaviour.Pop1_pop1 or StackBehaviour.Popi_pop1 or StackBehaviour.Popi_popi or StackBehaviour.Popi_popi8
                or StackBehaviour.Popi_popr4 or StackBehaviour.Popi_popr8 or StackBehaviour.Popref_pop1
                or StackBehaviour.Popref_popi => 2,
            StackBehaviour.Popi_popi_popi or StackBehaviour.Popref_popi_popi or StackBehaviour.Popref_popi_popi8
                or StackBehaviour.Popref_popi_popr4 or StackBehaviour.Popref_popi_popr8 or StackBehaviour.Popref_popi_popref
                => 3,
            StackBehaviour.PopAll => s.Depth,
            _ => 0,
        };

        private static IEnumerable<Instruction> Successors(Instruction ins)
        {
            switch (ins.OpCode.FlowControl)
            {
                case FlowControl.Branch:
                    yield return (Instruction)ins.Operand;
                    yield break;
                case FlowControl.Cond_Branch:
                    if (ins.Operand is Instruction[] targets) foreach (var t in targets) yield return t;
                    else yield return (Instruction)ins.Operand;
                    if (ins.Next is not null) yield return ins.Next;
                    yield break;
                case FlowControl.Return or FlowControl.Throw:
                    yield break;
                default:
                    if (ins.OpCode.Code is Code.Endfinally or Code.Endfilter) yield break;
                    if (ins.Next is not null) yield return ins.Next;
                    yield break;
            }
        }
    }
}
