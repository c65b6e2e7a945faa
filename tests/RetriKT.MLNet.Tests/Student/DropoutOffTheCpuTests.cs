using RetriKT.MLNet.Student;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// The student's dropout off the CPU fell back to torch's process-wide generator, unseeded, so training on CUDA gave
/// other weights at every run. TorchSharp 0.107 makes every Generator on the CPU (its native constructor ignores the
/// device it is given), so a generator "on the device" cannot be had: the mask is drawn from the training's CPU generator
/// and moved to the tensor's device. Checked here with torch's meta device (no GPU on the test machines): the draw
/// advances the seeded generator exactly as a CPU tensor of the same shape does.
/// </summary>
public class DropoutOffTheCpuTests
{
    [Fact]
    public void DropoutOffTheCpuDrawsItsMaskFromTheSeededGenerator()
    {
        using var scope = NewDisposeScope();
        var dropout = new SeededDropout(0.25);
        using var onCpu = new Generator(7);
        using var offCpu = new Generator(7);
        using var untouched = new Generator(7);

        dropout.Generator = onCpu;
        dropout.Apply(ones(4, 6), training: true);
        dropout.Generator = offCpu;
        var result = dropout.Apply(ones(new long[] { 4, 6 }, device: device("meta")), training: true);

        Assert.Equal(DeviceType.META, result.device_type);
        Assert.Equal(new long[] { 4, 6 }, result.shape);
        static byte[] State(Generator generator) => generator.get_state().data<byte>().ToArray();
        Assert.False(State(offCpu).SequenceEqual(State(untouched)), "the off-CPU draw did not use the seeded generator");
        Assert.True(State(offCpu).SequenceEqual(State(onCpu)), "the off-CPU draw took another number of values than the CPU's");
    }
}
