using Mono.Cecil;
using Mono.Cecil.Cil;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// TorchSharp 0.107 frees a temporary Scalar in its finalizer, and the GC may run that while torch still reads the
/// Scalar: with plain numbers (<c>x.pow(2).mul(0.5).add_(1e-5)</c>) this loop dies within seconds in torch's Scalar
/// tag check (measured; it takes the test host down, so that variant is not kept here). Held scalars, alpha
/// included, must survive the same collector pressure, and the training code must pass nothing else.
/// </summary>
public class HeldScalarTests
{
    private static readonly Scalar Eps = 1e-5.ToScalar();

    [Fact]
    public void HeldScalarsSurviveACollectorRunningBesideTheTorchCalls()
    {
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() => { while (!stop.IsCancellationRequested) { GC.Collect(); GC.WaitForPendingFinalizers(); } });
        collector.Start();
        double sum = 0;
        try
        {
            using var x = ones(64, 256);
            for (int i = 0; i < 30_000; i++)
            {
                using var scope = NewDisposeScope();
                var y = x.pow(HeldScalars.Two).mul(HeldScalars.Half).add_(Eps, HeldScalars.One).mul_(HeldScalars.One);
                if (i % 10_000 == 0) sum += y.mean().item<float>();
            }
        }
        finally { stop.Cancel(); collector.Join(); }
        Assert.Equal(3 * (0.5 + 1e-5), sum, 4);
    }

    // Weight initialisation, run once per model: its p.fill_(1) and normal draws may make temporaries.
    private static readonly HashSet<string> RunOnce =
    [
        "RetriKT.MLNet.Teacher.Init::Normal",
        "RetriKT.MLNet.Teacher.Gpt2LMHeadModel::InitializeWeights",
        "RetriKT.MLNet.Teacher.LlamaForCausalLM::InitializeWeights",
        "RetriKT.MLNet.Student.StudentModel::Initialize",
        "RetriKT.MLNet.Student.StudentModel::InitializeTokenEmbeddings",
        "RetriKT.MLNet.Encoders.MaskedLmModel::Initialize",
    ];

    /// <summary>
    /// Scans the training assembly's IL: no method but weight initialisation may make a Scalar that nothing holds (a
    /// number converted in the call's arguments) or call a TorchSharp method that makes one itself (add/add_ without
    /// alpha and so the <c>+</c> operator, <c>square()</c>, <c>arange</c> without a step, operators with a number, and
    /// <c>optimizer.step()</c>, whose AdamW and Adam overrides make them). A Scalar stored in a field or a local (a
    /// <c>using</c>) is held.
    /// </summary>
    [Fact]
    public void TrainingCodeMakesNoTemporaryScalar()
    {
        using var torchSharp = AssemblyDefinition.ReadAssembly(Path.Combine(AppContext.BaseDirectory, "TorchSharp.dll"));
        var makers = TorchSharpMethodsMakingTemporaries(torchSharp.MainModule);
        Assert.Contains("TorchSharp.torch/Tensor TorchSharp.torch/Tensor::square()", makers);
        Assert.Contains("TorchSharp.torch/Tensor TorchSharp.torch/Tensor::add_(TorchSharp.torch/Tensor)", makers);

        using var training = AssemblyDefinition.ReadAssembly(Path.Combine(AppContext.BaseDirectory, "RetriKT.MLNet.Training.dll"));
        var violations = Violations(training.MainModule, makers, RunOnce, out int heldUses);
        Assert.True(violations.Count == 0, "Temporary Scalars (see HeldScalars):\n" + string.Join("\n", violations));
        Assert.True(heldUses > 0, "the audit saw no use of HeldScalars: it is not looking at the right assembly");
    }

    /// <summary>
    /// The same audit of these tests: they run in one test host, so a temporary Scalar freed under a torch call in any
    /// of them (rare: it needs a collection at that moment) takes every test of the run down with it.
    /// </summary>
    [Fact]
    public void TestCodeMakesNoTemporaryScalar()
    {
        using var torchSharp = AssemblyDefinition.ReadAssembly(Path.Combine(AppContext.BaseDirectory, "TorchSharp.dll"));
        var makers = TorchSharpMethodsMakingTemporaries(torchSharp.MainModule);
        using var tests = AssemblyDefinition.ReadAssembly(typeof(HeldScalarTests).Assembly.Location);
        // The parity test must step TorchSharp's own optimizers, the reference; it steps them where no collection can run.
        var violations = Violations(tests.MainModule, makers, ["RetriKT.MLNet.Tests.Foundation.HeldAdamWTests::OneStep"], out int heldUses);
        Assert.True(violations.Count == 0, "Temporary Scalars in the tests (hold them in a using local or use HeldScalars):\n" + string.Join("\n", violations));
        Assert.True(heldUses > 0, "the audit saw no use of HeldScalars: it is not looking at the right assembly");
    }

    private static SortedSet<string> Violations(ModuleDefinition module, HashSet<string> makers, HashSet<string> exempt, out int heldUses)
    {
        var violations = new SortedSet<string>();
        heldUses = 0;
        foreach (var type in module.GetTypes())
            foreach (var method in type.Methods.Where(m => m.HasBody))
            {
                var outer = type;
                while (outer.DeclaringType is not null) outer = outer.DeclaringType;
                string where = $"{type.FullName}::{method.Name}";
                if (exempt.Contains($"{outer.FullName}::{method.Name}")) continue;
                foreach (var instruction in method.Body.Instructions)
                {
                    if (instruction.Operand is MemberReference { DeclaringType.FullName: "RetriKT.MLNet.Common.HeldScalars" }) heldUses++;
                    if (instruction.Operand is not MethodReference callee) continue;
                    if (MakesScalar(callee))
                    {
                        if (!Stored(instruction)) violations.Add($"{where}: a number made into a temporary Scalar ({callee.Parameters[0].ParameterType.Name})");
                    }
                    else if (makers.Contains(callee.FullName)) violations.Add($"{where}: {callee.DeclaringType.Name}::{callee.Name}({string.Join(", ", callee.Parameters.Select(p => p.ParameterType.Name))}) makes a temporary Scalar");
                }
            }
        return violations;
    }

    private static bool MakesScalar(MethodReference m)
        => m.ReturnType.FullName == "TorchSharp.Scalar" && m.Name is "op_Implicit" or "ToScalar";

    // The Scalar goes into a local or a field, not straight into a call.
    private static bool Stored(Instruction made)
    {
        var next = made.Next;
        while (next is not null && next.OpCode == OpCodes.Nop) next = next.Next;
        return next is not null && (next.OpCode.Code is >= Code.Stloc_0 and <= Code.Stloc_3 || next.OpCode == OpCodes.Stloc_S
            || next.OpCode == OpCodes.Stloc || next.OpCode == OpCodes.Stfld || next.OpCode == OpCodes.Stsfld);
    }

    // TorchSharp's methods that make a Scalar from a number, directly or through another such method.
    private static HashSet<string> TorchSharpMethodsMakingTemporaries(ModuleDefinition torchSharp)
    {
        var methods = torchSharp.GetTypes()
            .Where(t => t.FullName is not ("TorchSharp.Scalar" or "TorchSharp.ScalarExtensionMethods"))
            .SelectMany(t => t.Methods).Where(m => m.HasBody).ToList();
        var makers = new HashSet<string>();
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var m in methods)
                if (!makers.Contains(m.FullName) && m.Body.Instructions.Any(i => i.Operand is MethodReference r && (MakesScalar(r) || makers.Contains(r.FullName))))
                    grew |= makers.Add(m.FullName);
        }
        // A call to a virtual method reaches whichever override the object has: optimizer.step() names Optimizer::step,
        // which makes no Scalar, while AdamW's override makes several. The methods that such an override overrides count too.
        foreach (var m in methods.Where(m => m.IsVirtual && makers.Contains(m.FullName)).ToList())
            for (var type = m.DeclaringType.BaseType?.Resolve(); type is not null; type = type.BaseType?.Resolve())
                foreach (var overridden in type.Methods.Where(b => b.IsVirtual && b.Name == m.Name && SameParameters(b, m)))
                    makers.Add(overridden.FullName);
        return makers;
    }

    private static bool SameParameters(MethodDefinition a, MethodDefinition b)
        => a.Parameters.Select(p => p.ParameterType.FullName).SequenceEqual(b.Parameters.Select(p => p.ParameterType.FullName));
}
