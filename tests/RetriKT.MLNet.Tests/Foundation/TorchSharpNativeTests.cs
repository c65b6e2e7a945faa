using System.Text;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>TorchSharp's native backend loads on this OS (build-time ELF patch) and computes real results.</summary>
public class TorchSharpNativeTests
{
    [Fact]
    public void MatrixProductAndAutogradGiveExactKnownValues()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        var b = tensor(new float[] { 7, 8, 9, 10, 11, 12 }, 3, 2);
        var c = a.matmul(b);
        Assert.Equal(new float[] { 58, 64, 139, 154 }, c.data<float>().ToArray());

        var x = tensor(new float[] { 1.5f, -2f, 3f }, requires_grad: true);
        var y = (x * x * x).sum();                       // dy/dx = 3x²
        y.backward();
        Assert.Equal(new float[] { 6.75f, 12f, 27f }, x.grad!.data<float>().ToArray());
    }

    [Fact]
    public void TrainingALinearModelRecoversItsWeightsAndSurvivesSaveLoad()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        random.manual_seed(7);
        var trueW = tensor(new float[] { 2f, -3f, 0.5f }, 3, 1);
        var inputs = randn(256, 3);
        using var bias = 1.25f.ToScalar(); // held, not a temporary (HeldScalarTests)
        var targets = inputs.matmul(trueW).add(bias, HeldScalars.One);
        using var model = nn.Linear(3, 1);
        using var optimizer = new HeldAdamW(model.parameters(), 0.05); // Adam, its Scalars held (TorchSharp's Adam.step makes temporaries)
        for (int step = 0; step < 400; step++)
        {
            using var stepScope = NewDisposeScope();
            optimizer.ZeroGrad();
            var loss = nn.functional.mse_loss(model.forward(inputs), targets);
            loss.backward();
            optimizer.Step();
        }
        var w = model.weight!.data<float>().ToArray();
        Assert.Equal(2f, w[0], 2);
        Assert.Equal(-3f, w[1], 2);
        Assert.Equal(0.5f, w[2], 2);
        Assert.Equal(1.25f, model.bias!.data<float>()[0], 2);

        using var stream = new MemoryStream();
        model.save(new BinaryWriter(stream));
        stream.Position = 0;
        using var restored = nn.Linear(3, 1);
        restored.load(new BinaryReader(stream));
        Assert.Equal(model.forward(inputs).data<float>().ToArray(), restored.forward(inputs).data<float>().ToArray());
    }

    [Fact]
    public void OutputCopyOfTheNativeBridgeIsPatchedOnlyWhenTheSystemLacksTheVersion()
    {
        var copies = Directory.GetFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories);
        Assert.NotEmpty(copies);
        bool systemHasIt = new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }
            .Where(File.Exists).Take(1).Any(p => Encoding.ASCII.GetString(File.ReadAllBytes(p)).Contains("GLIBCXX_3.4.32\0"));
        foreach (var copy in copies)
        {
            var flags = ElfVersionNeeds.Flags(copy, "GLIBCXX_3.4.32");
            Assert.NotNull(flags);
            Assert.Equal(!systemHasIt, (flags!.Value & 0x2) != 0);
        }
        // The NuGet cache copy is never touched.
        var home = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var cached = Path.Combine(home, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (File.Exists(cached)) Assert.Equal(0, ElfVersionNeeds.Flags(cached, "GLIBCXX_3.4.32")!.Value & 0x2);
    }
}

/// <summary>Independent reader of .gnu.version_r entries (test oracle for the build-time patch).</summary>
internal static class ElfVersionNeeds
{
    public static ushort? Flags(string path, string version)
    {
        var image = File.ReadAllBytes(path);
        long shoff = BitConverter.ToInt64(image, 0x28);
        int shentsize = BitConverter.ToUInt16(image, 0x3A), shnum = BitConverter.ToUInt16(image, 0x3C);
        for (int s = 0; s < shnum; s++)
        {
            int h = (int)(shoff + s * shentsize);
            if (BitConverter.ToUInt32(image, h + 4) != 0x6ffffffe) continue;
            int off = (int)BitConverter.ToInt64(image, h + 24);
            int link = (int)BitConverter.ToUInt32(image, h + 40), count = (int)BitConverter.ToUInt32(image, h + 44);
            int strtab = (int)BitConverter.ToInt64(image, (int)(shoff + link * shentsize) + 24);
            int need = off;
            for (int n = 0; n < count; n++)
            {
                int aux = need + (int)BitConverter.ToUInt32(image, need + 8);
                for (int a = 0; a < BitConverter.ToUInt16(image, need + 2); a++)
                {
                    int name = strtab + (int)BitConverter.ToUInt32(image, aux + 8);
                    int end = Array.IndexOf(image, (byte)0, name);
                    if (Encoding.ASCII.GetString(image, name, end - name) == version) return BitConverter.ToUInt16(image, aux + 4);
                    aux += (int)BitConverter.ToUInt32(image, aux + 12);
                }
                need += (int)BitConverter.ToUInt32(image, need + 12);
            }
        }
        return null;
    }
}
