using RetriKT.MLNet.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// TorchSharp 0.107 makes every Generator a CPU one (its native constructor ignores the device; dotnet/TorchSharp#1194),
/// and libtorch refuses a CPU generator for a CUDA tensor's draw. The teacher's seeded draws (residual dropout while
/// pretraining, the token draw while sampling) therefore run on the CPU and move to the device. No GPU on the test
/// machines: the dropout is checked on torch's meta device (its draw must take the seeded generator's values as a CPU
/// tensor's does), and the token draw on the CPU (the same ids as the plain multinomial it replaced).
/// </summary>
public class TeacherDrawsOffTheCpuTests
{
    private static byte[] State(Generator generator) => generator.get_state().data<byte>().ToArray();

    [Fact]
    public void ResidualDropoutOffTheCpuDrawsItsMaskFromTheSeededGenerator()
    {
        using var scope = NewDisposeScope();
        using var onCpu = new Generator(11);
        using var offCpu = new Generator(11);
        using var untouched = new Generator(11);

        var cpuResult = new ResidualDrop(0.3, onCpu).Apply(ones(5, 8));
        var metaResult = new ResidualDrop(0.3, offCpu).Apply(ones(new long[] { 5, 8 }, device: device("meta")));

        Assert.Equal(DeviceType.META, metaResult.device_type);
        Assert.Equal(cpuResult.shape, metaResult.shape);
        Assert.False(State(offCpu).SequenceEqual(State(untouched)), "the off-CPU dropout did not draw from the seeded generator");
        Assert.True(State(offCpu).SequenceEqual(State(onCpu)), "the off-CPU dropout took another number of values than the CPU's");
    }

    [Fact]
    public void TheTokenDrawOnTheCpuIsThePlainMultinomial()
    {
        using var scope = NewDisposeScope();
        using var drawGenerator = new Generator(5);
        using var plainGenerator = new Generator(5);
        using var valuesGenerator = new Generator(3);
        var probabilities = rand(new long[] { 6, 50 }, generator: valuesGenerator).softmax(-1);

        var drawn = Sampler.Draw(probabilities, drawGenerator);

        Assert.Equal(new long[] { 6 }, drawn.shape);
        Assert.Equal(probabilities.multinomial(1, generator: plainGenerator).squeeze(1).data<long>().ToArray(), drawn.data<long>().ToArray());
        Assert.True(State(drawGenerator).SequenceEqual(State(plainGenerator)));
    }
}
