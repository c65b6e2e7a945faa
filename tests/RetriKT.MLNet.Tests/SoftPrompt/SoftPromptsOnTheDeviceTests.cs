using RetriKT.MLNet.SoftPrompt;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// The PPO trainer and the soft prompt transformer build the prompts on the CPU and move them to the teacher's device
/// with <c>Module.to</c>, which replaces every parameter by a copy there (disposing the old one) and updates the field
/// of the parameter's name. The prompts are read through their fields, so each field must follow the move. No GPU on
/// the test machines: the move is checked to torch's meta device, which makes the same copies (its index_select has no
/// meta kernel, so the prompts' values are checked after a move to another dtype, which copies as a device move does).
/// </summary>
public class SoftPromptsOnTheDeviceTests
{
    [Fact]
    public void PromptsMovedOffTheCpuAreReadFromTheMovedParameters()
    {
        using var scope = NewDisposeScope();
        using var prompts = new SoftPromptModule(ones(3, 2, 4), ones(1, 4));

        prompts.to(device("meta"));

        Assert.All(prompts.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal((3, 2, 1, 4), (prompts.Labels, prompts.LabelTokens, prompts.TaskTokens, prompts.Hidden));
    }

    [Fact]
    public void PromptsCopiedByAMoveAreTheOnesTheOptimizerTrains()
    {
        using var scope = NewDisposeScope();
        using var prompts = new SoftPromptModule(RetriKT.MLNet.Common.HeldScalars.Arange(24, ScalarType.Float32, CPU).reshape(3, 2, 4), ones(1, 4));

        prompts.to(ScalarType.Float64);
        var perRow = prompts.PromptsFor(tensor(new long[] { 2 }), ScalarType.Float64);
        perRow.sum().backward();

        Assert.Equal(new long[] { 1, 3, 4 }, perRow.shape);
        Assert.Equal(new double[] { 1, 1, 1, 1, 16, 17, 18, 19, 20, 21, 22, 23 }, perRow.data<double>().ToArray());
        Assert.All(prompts.parameters(), p => Assert.NotNull(p.grad));
    }
}
