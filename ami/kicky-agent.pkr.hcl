# The AMI: Debian 12 with Docker, the SSM Agent and the kicky-agent .deb, its units enabled (not
# started: the image has no application; each instance's first boot starts it). Written for
# Packer 1.6 (Debian 12's `packer`, whose amazon-ebs builder is built in and validates offline);
# newer Packer needs a `packer { required_plugins { amazon = ... } }` block and `packer init`
# first.
#
#   cargo deb                                  # target/debian/kicky-agent_<version>_amd64.deb
#   packer build -var deb_path=target/debian/kicky-agent_0.1.0-1_amd64.deb \
#     -var 'images=["123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/orange:1.4.2"]' ami/kicky-agent.pkr.hcl
#
# IMDSv2 is required by the launch template (ami/cloudformation.yaml), not here: Packer 1.6 has no
# metadata_options for the builder instance.

variable "region" {
  type    = string
  default = "ap-northeast-2"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

# The .deb built by `cargo deb`.
variable "deb_path" {
  type = string
}

# Images pulled into the AMI, so an instance's first sync finds them (`compose.pull: missing`
# then pulls nothing; `always` still asks the registry, and moves only what changed). Pulling
# from ECR needs the builder instance's role to allow it (`iam_instance_profile` below) and
# amazon-ecr-credential-helper; public images need nothing.
variable "images" {
  type    = list(string)
  default = []
}

variable "iam_instance_profile" {
  type    = string
  default = ""
}

locals {
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "debian" {
  region               = var.region
  instance_type        = var.instance_type
  iam_instance_profile = var.iam_instance_profile
  ssh_username         = "admin"
  ami_name             = "kicky-agent-${local.stamp}"
  ami_description      = "Debian 12, Docker, kicky-agent (enabled)"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    # Debian's own account.
    owners      = ["136693071363"]
    most_recent = true
  }
  tags = {
    Name    = "kicky-agent"
    Builder = "packer"
  }
}

build {
  sources = ["source.amazon-ebs.debian"]

  provisioner "file" {
    source      = var.deb_path
    destination = "/tmp/kicky-agent.deb"
  }

  provisioner "shell" {
    inline = [
      "set -eux",
      "sudo apt-get update -q",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl docker.io amazon-ecr-credential-helper /tmp/kicky-agent.deb",
      "sudo systemctl enable docker.service",
      # kicky-agent-imds-guard (from the .deb) runs before Docker: only the kicky-imds network's
      # containers reach instance metadata.
      "systemctl is-enabled kicky-agent-imds-guard.service",
      # Debian's AMI has no SSM Agent; Run Command (the kicky-agent-resync document) needs it.
      # From AWS's bucket in the build's region, as the Systems Manager user guide installs it
      # on Debian; the stack's role grants it its own needs only (ami/cloudformation.yaml).
      "curl -fsSL -o /tmp/amazon-ssm-agent.deb https://amazon-ssm-${var.region}.s3.${var.region}.amazonaws.com/latest/debian_amd64/amazon-ssm-agent.deb",
      "sudo dpkg -i /tmp/amazon-ssm-agent.deb",
      "rm /tmp/amazon-ssm-agent.deb",
      # Enabled, not started: the builder instance runs no application.
      "systemctl is-enabled kicky-agent.service",
      "test \"$(systemctl is-active kicky-agent.service || true)\" != active",
      "rm /tmp/kicky-agent.deb",
    ]
  }

  # Pre-pulled images live in the AMI's snapshot. EBS loads a snapshot's blocks lazily: the first
  # read of each block on a new instance comes from S3, so the first start of a big image can be
  # slower than a pull. Either turn on Fast Snapshot Restore for the AMI's snapshot in the AZs the
  # group uses, or read the image layers once at boot (for example `find /var/lib/docker -type f
  # -exec cat {} + > /dev/null` in a oneshot unit ordered before kicky-agent).
  provisioner "shell" {
    inline = concat(["set -eux"], [for image in var.images : "sudo docker pull ${image}"])
  }
}
